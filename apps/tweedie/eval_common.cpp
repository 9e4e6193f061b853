#include "eval_common.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <fstream>

#include "tweedie/core/error.h"
#include "tweedie/models/network_io.h"

namespace tweedie::cli {

std::unique_ptr<Evaluator> make_evaluator(const std::string& classifier_path, const std::string& reference) {
  const std::string path = classifier_path.empty() ? default_classifier_path() : classifier_path;
  check(std::ifstream(path).good(), "classifier ", path, " is missing",
        classifier_path.empty() ? " (train it with the command in models/README.md)" : "");
  auto clf = as_classifier(load_network(path), path);
  return std::make_unique<Evaluator>(clf, load_dataset(reference));
}

void check_model_fits(const LoadedModel& model, const Evaluator& ev, const std::string& model_path) {
  check(model.image, model_path, ": FID needs an image model");
  auto want = ev.classifier().sample_shape();
  check(model.sample_shape == want, model_path, ": samples of shape ", c10::IntArrayRef(model.sample_shape),
        " do not fit the classifier's input ", c10::IntArrayRef(want));
  check(model.num_classes == 0 || model.num_classes == ev.classifier().num_classes(), model_path, ": ",
        model.num_classes, " classes, the classifier knows ", ev.classifier().num_classes());
}

BalancedSamples generate_balanced(const LoadedModel& model, const SamplerInfo& sampler, const std::vector<double>& sigmas,
                                  int64_t n, const GuidanceOptions& guidance, uint64_t seed, const GenerateOptions& opt) {
  check(n >= 2, "FID needs at least 2 samples (got -n ", n, ")");
  Cond cond;
  DenoiserPtr den = model.denoiser;
  BalancedSamples out;
  if (model.num_classes > 0) {
    out.labels = torch::arange(n, torch::kInt64).remainder(model.num_classes);
    cond.labels = out.labels;
  } else {
    check(!guidance.guides(), "--cfg needs a class-conditional model");
  }
  den = make_guidance(den, guidance);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), model.sample_shape.begin(), model.sample_shape.end());
  auto noise = at::randn(shape, gen, torch::kFloat32);
  torch::NoGradGuard ng;
  Generated g = generate(*den, sampler, sigmas, noise, cond, opt, gen);
  check(torch::isfinite(g.x).all().item<bool>(), "sampling produced non-finite values");
  out.images = g.x.clamp(-1, 1);
  out.nfe = g.nfe;
  return out;
}

// ---- FashionCanvas ------------------------------------------------------------

CanvasJudge make_canvas_judge(const std::string& classifier_path) {
  const std::string path = classifier_path.empty() ? default_classifier_path() : classifier_path;
  check(std::ifstream(path).good(), "classifier ", path, " is missing");
  return CanvasJudge(as_classifier(load_network(path), path));
}

torch::Tensor generate_prompts(StableDiffusion& sd, const std::vector<std::string>& prompts, SdRequest base,
                               int64_t batch, const std::function<void(int64_t)>& progress,
                               const std::function<void(int64_t, int64_t)>& before_chunk) {
  check(!prompts.empty(), "no prompts to generate");
  check(batch >= 1, "--batch must be >= 1");
  std::vector<torch::Tensor> out;
  const uint64_t seed = base.seed;
  for (int64_t i = 0, k = 0; i < int64_t(prompts.size()); i += batch, ++k) {
    const int64_t m = std::min<int64_t>(batch, int64_t(prompts.size()) - i);
    base.prompts.assign(prompts.begin() + i, prompts.begin() + i + m);
    base.batch = m;
    base.seed = seed + uint64_t(k);
    if (before_chunk) before_chunk(i, m);
    out.push_back(sd_generate(sd, base));
    if (progress) progress(i + m);
  }
  return torch::cat(out);
}

CanvasEval evaluate_canvases(const CanvasJudge& judge, const std::vector<CanvasLayout>& layouts,
                             const torch::Tensor& images, uint64_t reference_seed) {
  check(images.size(0) == int64_t(layouts.size()), images.size(0), " images for ", layouts.size(), " prompts");
  check(layouts.size() >= 2, "FID needs at least 2 images");
  static const FashionCanvas test("test");
  std::vector<torch::Tensor> refs;
  for (size_t i = 0; i < layouts.size(); ++i)
    refs.push_back(test.render(layouts[i], test.pick_sources(layouts[i], reference_seed, int64_t(i))));
  auto [gv, gf] = judge.judge_and_features(images);
  auto [rv, rf] = judge.judge_and_features(torch::stack(refs));
  CanvasEval e;
  e.generated = score_canvases(layouts, gv);
  e.reference = score_canvases(layouts, rv);
  e.fid = frechet_distance(FeatureStats::of(gf), FeatureStats::of(rf));
  return e;
}

std::vector<AttentionTarget> canvas_attention_targets(const StableDiffusion& sd, const std::vector<CanvasLayout>& layouts,
                                                      int64_t first, int64_t count) {
  std::vector<AttentionTarget> out;
  for (int64_t r = 0; r < count; ++r) {
    const CanvasLayout& l = layouts[size_t(first + r)];
    const auto words = sd.word_positions(canonical_caption(l));
    const auto item_words = canvas_item_words(l);
    for (size_t k = 0; k < l.items.size(); ++k) {
      AttentionTarget t;
      t.row = r;
      for (int64_t w : item_words[k]) {
        check(w < int64_t(words.size()), "caption words and tokenizer words disagree");
        t.tokens.insert(t.tokens.end(), words[size_t(w)].positions.begin(), words[size_t(w)].positions.end());
      }
      t.box = canvas_cell_box(l.items[k].cell);
      out.push_back(std::move(t));
    }
  }
  return out;
}

namespace {

// Mean share of a layer over steps [a, b).
double range_mean(const std::map<int, AttentionShare::Tally>& by_step, int a, int b) {
  AttentionShare::Tally t;
  for (auto& [step, x] : by_step)
    if (step >= a && step < b) t.sum += x.sum, t.count += x.count;
  return t.mean();
}

std::vector<std::pair<int, int>> step_ranges(int steps) {
  const int a = steps / 3, b = 2 * steps / 3;
  return {{0, a}, {a, b}, {b, steps}, {0, steps}};
}

std::string share(const CanvasTally& t) {
  if (t.images == 0) return "-";
  char b[64];
  std::snprintf(b, sizeof b, "%.3f (%ld/%ld)", t.accuracy(), (long)t.correct, (long)t.images);
  return b;
}

nlohmann::json score_json(const CanvasScore& s) {
  nlohmann::json j{{"image_accuracy", s.all.accuracy()},
                   {"seen_accuracy", s.seen.accuracy()},
                   {"held_out_accuracy", s.held_out.accuracy()},
                   {"presence_accuracy", s.presence_accuracy()},
                   {"class_accuracy", s.class_accuracy()},
                   {"colour_accuracy", s.colour_accuracy()},
                   {"empty_accuracy", s.empty_accuracy()},
                   {"images", s.all.images},
                   {"seen_images", s.seen.images},
                   {"held_out_images", s.held_out.images}};
  for (int k = 0; k < 4; ++k) j["accuracy_" + std::to_string(k + 1) + "_items"] = s.by_count[size_t(k)].accuracy();
  return j;
}

}  // namespace

void print_canvas_eval(const CanvasEval& e) {
  std::printf("%-22s %-22s %-22s\n", "", "generated", "reference (test canvases)");
  auto row = [](const char* name, const std::string& a, const std::string& b) {
    std::printf("%-22s %-22s %-22s\n", name, a.c_str(), b.c_str());
  };
  auto num = [](double x) {
    char b[32];
    std::snprintf(b, sizeof b, "%.3f", x);
    return x < 0 ? std::string("-") : std::string(b);
  };
  const CanvasScore &g = e.generated, &r = e.reference;
  row("image accuracy", share(g.all), share(r.all));
  row("  seen pairs", share(g.seen), share(r.seen));
  row("  held-out pair", share(g.held_out), share(r.held_out));
  for (int k = 0; k < 4; ++k) {
    const std::string name = "  " + std::to_string(k + 1) + (k ? " items" : " item");
    row(name.c_str(), share(g.by_count[size_t(k)]), share(r.by_count[size_t(k)]));
  }
  row("presence", num(g.presence_accuracy()), num(r.presence_accuracy()));
  row("class", num(g.class_accuracy()), num(r.class_accuracy()));
  row("colour", num(g.colour_accuracy()), num(r.colour_accuracy()));
  row("empty cells", num(g.empty_accuracy()), num(r.empty_accuracy()));
  const auto ratio = [](const CanvasTally& a, const CanvasTally& b) {
    return b.correct ? a.accuracy() / b.accuracy() : -1.0;
  };
  std::printf("relative accuracy (generated / reference): %.3f seen, %.3f held-out; FID %.3f\n", ratio(g.seen, r.seen),
              ratio(g.held_out, r.held_out), e.fid);
}

void print_attention_shares(const AttentionShare& a, int steps) {
  const auto ranges = step_ranges(steps);
  std::printf("\nshare of each item word's cross-attention mass inside its cell (uniform: 0.250), by layer and step:\n");
  std::printf("%-46s", "layer");
  for (auto [lo, hi] : ranges) {
    char b[32];
    std::snprintf(b, sizeof b, "steps %d-%d", lo, hi - 1);
    std::printf(" %12s", b);
  }
  std::printf("\n");
  std::vector<AttentionShare::Tally> total(ranges.size());
  for (auto& [layer, by_step] : a.tallies()) {
    std::printf("%-46s", layer.c_str());
    for (size_t i = 0; i < ranges.size(); ++i) {
      std::printf(" %12.3f", range_mean(by_step, ranges[i].first, ranges[i].second));
      for (auto& [step, x] : by_step)
        if (step >= ranges[i].first && step < ranges[i].second) total[i].sum += x.sum, total[i].count += x.count;
    }
    std::printf("\n");
  }
  std::printf("%-46s", "all layers");
  for (auto& t : total) std::printf(" %12.3f", t.mean());
  std::printf("\n");
}

nlohmann::json attention_shares_json(const AttentionShare& a, int steps) {
  nlohmann::json j = nlohmann::json::object();
  for (auto& [layer, by_step] : a.tallies()) {
    nlohmann::json per_step = nlohmann::json::array();
    for (int s = 0; s < steps; ++s) per_step.push_back(range_mean(by_step, s, s + 1));
    j[layer] = per_step;
  }
  return j;
}

nlohmann::json canvas_eval_json(const CanvasEval& e) {
  return {{"generated", score_json(e.generated)}, {"reference", score_json(e.reference)}, {"fid", e.fid}};
}

}  // namespace tweedie::cli
