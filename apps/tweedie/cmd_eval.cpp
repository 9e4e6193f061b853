// tweedie eval: FID, precision/recall and class accuracy of a model's samples (or of a folder
// of PNGs written by `tweedie sample -o DIR/`) in the feature space of the
// shipped classifier, against the Fashion-MNIST test set (eval/evaluator.h).
#include <cstdio>
#include <set>
#include <filesystem>
#include <fstream>
#include <regex>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "eval_common.h"
#include "guidance_args.h"
#include "sampling_args.h"
#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/models/net_denoiser.h"
#include "tweedie/process/schedule.h"

namespace tweedie::cli {
namespace {

// PNGs of DIR in name order; labels from names ending in _c<K>.png (all or none).
std::pair<torch::Tensor, torch::Tensor> read_image_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  check(is_directory(dir), "--images: '", dir, "' is not a directory");
  std::vector<std::string> files;
  for (auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && ends_with(e.path().filename().string(), ".png")) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  check(files.size() >= 2, dir, ": FID needs at least 2 PNG images, found ", files.size());
  static const std::regex labelled(".*_c([0-9]+)\\.png$");
  std::vector<torch::Tensor> imgs;
  std::vector<int64_t> labels;
  for (auto& f : files) {
    Image im = read_png(f);
    torch::Tensor t = image_to_tensor(im);
    if (!imgs.empty() && t.sizes() != imgs[0].sizes())
      fail(f, ": size ", t.sizes(), " differs from ", files[0], "'s ", imgs[0].sizes());
    imgs.push_back(t);
    std::smatch m;
    const std::string name = fs::path(f).filename().string();
    if (std::regex_match(name, m, labelled)) labels.push_back(std::stoll(m[1]));
  }
  check(labels.empty() || labels.size() == files.size(), dir,
        ": some file names carry a class (_cK.png) and some do not");
  return {torch::stack(imgs), labels.empty() ? torch::Tensor() : torch::tensor(labels, torch::kInt64)};
}

// Canonical captions, one per line (blank lines and # comments skipped).
std::vector<CanvasLayout> read_prompt_file(const std::string& path) {
  std::ifstream f(path);
  check(f.good(), "--prompts: cannot read '", path, "'");
  std::vector<CanvasLayout> out;
  std::string line;
  for (int no = 1; std::getline(f, line); ++no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos || line[line.find_first_not_of(" \t")] == '#') continue;
    try {
      out.push_back(parse_canonical_caption(line));
    } catch (const Error& e) {
      fail(path, ":", no, ": ", e.what());
    }
  }
  check(out.size() >= 2, path, ": FID needs at least 2 prompts, found ", out.size());
  return out;
}

// A FashionCanvas text model: SPEC's judge on a seeded prompt set (or --prompts).
int run_text(const Args& a, const std::string& spec) {
  for (const char* o : {"reference", "images"})
    check(!a.has(o), "tweedie eval: --", o, " applies to class models; a text model is judged against test canvases of "
          "its prompts");
  std::set<std::string> text_rules;  // the options of the rules offered for text models (as `tweedie generate`)
  for (const auto& o : sd_guidance_opts()) text_rules.insert(o.name);
  for (const auto& o : guidance_opts())
    check(o.name == "cfg" || text_rules.count(o.name) || !a.has(o.name), "tweedie eval: --", o.name,
          " is not available for text models (the rules `tweedie generate` takes are)");
  const uint64_t seed = uint64_t(a.integer("seed"));
  check(a.integer("seed") >= 0, "tweedie eval: --seed must be >= 0");
  const auto layouts = a.has("prompts") ? read_prompt_file(a.str("prompts")) : canvas_prompt_set(a.integer("num"), seed);
  check(layouts.size() >= 2, "tweedie eval: FID needs at least 2 prompts (got -n ", layouts.size(), ")");
  CanvasJudge judge = make_canvas_judge(a.str("classifier"));
  TextModelOptions to;
  to.tokenizer = a.str("tokenizer");
  to.bf16 = a.has("bf16");
  LoadedModel model = load_model(spec, "", "", to);
  StableDiffusion& sd = *model.sd;
  const int64_t native = sd.checkpoint().unet_config.height * sd.downscale();
  check(native == 64 && sd.checkpoint().unet_config.width * sd.downscale() == 64, spec, ": makes ", native,
        "-pixel images; FashionCanvas judging needs 64x64");
  SdRequest req;
  const SamplerInfo& sampler = set_sd_sampling(a, req);
  req.cfg = a.number("cfg");
  req.guidance = sd_guidance_options(a, req.cfg);
  req.width = req.height = 64;
  req.seed = seed;
  std::vector<std::string> prompts;
  for (auto& l : layouts) prompts.push_back(canonical_caption(l));
  const int64_t batch = a.integer("batch");
  check(batch >= 1, "tweedie eval: --batch must be >= 1");
  std::unique_ptr<AttentionShare> attention;
  if (a.has("attention"))
    attention = std::make_unique<AttentionShare>(sd.denoiser()->network(), sd.checkpoint().unet_config.height,
                                                 sd.checkpoint().unet_config.width);
  Progress prog("eval " + sampler.name, int(prompts.size()), !a.has("quiet"));
  auto images = generate_prompts(
      sd, prompts, req, batch, [&](int64_t done) { prog.update(int(done)); },
      [&](int64_t first, int64_t count) {
        if (attention) attention->set_targets(canvas_attention_targets(sd, layouts, first, count), count);
      });
  prog.finish();
  const CanvasEval e = evaluate_canvases(judge, layouts, images, seed);
  std::printf("%zu prompts (%s), %s: %s, %s, %d steps, %s, seed %lu\n", layouts.size(),
              a.has("prompts") ? a.str("prompts").c_str() : "seeded prompt set", spec.c_str(), sampler.name.c_str(),
              req.schedule.c_str(), req.steps, req.guidance.describe().c_str(), (unsigned long)seed);
  print_canvas_eval(e);
  if (attention) print_attention_shares(*attention, req.steps);
  if (a.has("json")) {
    nlohmann::json j = canvas_eval_json(e);
    if (attention) j["attention_share"] = attention_shares_json(*attention, req.steps);
    j.update({{"model", spec}, {"sampler", sampler.name}, {"schedule", req.schedule}, {"steps", req.steps},
              {"cfg", req.cfg}, {"guidance", req.guidance.describe()}, {"seed", seed}, {"batch", batch}, {"prompts", a.has("prompts") ? a.str("prompts") : ""}});
    write_file_atomic(a.str("json"), j.dump(2) + "\n");
  }
  return 0;
}

std::string percent(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f%%", 100 * x);
  return b;
}

int run(int argc, char** argv) {
  auto opts = sampling_opts("deis", "karras", 20);
  auto gopts = guidance_opts();
  opts.insert(opts.end(), gopts.begin(), gopts.end());
  std::vector<Args::Opt> own = {
      {"model", "m", false, "model file to sample (default: the shipped Fashion-MNIST model); a text model "
                           "(models/fashion_canvas.safetensors) is judged by FashionCanvas's rules", ""},
      {"prompts", "", false, "text models: canonical FashionCanvas captions, one per line (default: a seeded set of "
                             "-n prompts)", ""},
      {"tokenizer", "", false, "text models: folder with vocab.json + merges.txt (or $TWEEDIE_TOKENIZER)", ""},
      {"attention", "", true, "text models: also report the share of each item word's cross-attention inside its "
                              "cell, per layer and step range", ""},
      {"images", "", false, "evaluate the PNGs in this directory instead (classes from NNNNN_cK.png names)", ""},
      {"classifier", "", false, "classifier model file (default: models/fashion_mnist_classifier.safetensors)", ""},
      {"reference", "", false, "reference images: fashion-mnist:test, fashion-mnist or an image folder", "fashion-mnist:test"},
      {"num", "n", false, "number of samples (class-balanced for conditional models)", "1000"},
      {"cfg", "", false, "classifier-free guidance scale", "3"},
      {"seed", "", false, "random seed", "0"},
      {"batch", "", false, "samples per sampler run", "256"},
      {"bf16", "", true, "run the network in bfloat16", ""},
      {"json", "", false, "also write the results as JSON here", ""},
      {"quiet", "q", true, "no progress on stderr", ""},
  };
  opts.insert(opts.begin(), own.begin(), own.end());
  Args a("eval", "[-m MODEL | --images DIR] [options]", opts);
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie eval: unexpected argument '", a.positional().empty() ? "" : a.positional()[0], "'");
  check(!(a.has("images") && a.has("model")), "tweedie eval: give --model or --images, not both");
  if (a.has("model") && is_text_model(a.str("model"))) return run_text(a, a.str("model"));
  for (const char* o : {"prompts", "tokenizer", "attention"})
    check(!a.has(o), "tweedie eval: --", o, " applies to text models");
  nlohmann::json j;
  EvalResult r;
  std::string what;
  std::unique_ptr<Evaluator> ev;
  if (a.has("images")) {
    auto [images, labels] = read_image_dir(a.str("images"));  // bad input fails before the slower set-up
    ev = make_evaluator(a.str("classifier"), a.str("reference"));
    r = ev->evaluate(images, labels);
    what = std::to_string(r.n) + " images from " + a.str("images");
    j["images"] = a.str("images");
  } else {
    const std::string spec = a.has("model") ? a.str("model") : default_model_path();
    check(ends_with(spec, ".safetensors"), "tweedie eval: --model must be a model file (.safetensors), got '", spec, "'");
    LoadedModel model = load_model(spec, "", "");
    const SamplerInfo& sampler = find_sampler(a.str("sampler"));
    const int steps = sampling_steps(a, sampler);
    const double cfg = model.num_classes > 0 ? a.number("cfg") : 1.0;
    const GuidanceOptions guidance = guidance_options(a, model, cfg, model.num_classes > 0,
                                                      "a class-conditional model", uint64_t(a.integer("seed")));
    ev = make_evaluator(a.str("classifier"), a.str("reference"));
    check_model_fits(model, *ev, spec);
    if (a.has("bf16")) static_cast<NetDenoiser&>(*model.denoiser).set_dtype(torch::kBFloat16);
    auto sigmas = make_schedule(a.str("schedule"), model.denoiser->process(), steps, schedule_options(a));
    GenerateOptions gopt;
    gopt.sampler = sampler_options(a);
    gopt.batch = a.integer("batch");
    check(gopt.batch >= 0, "tweedie eval: --batch must be >= 0");
    const int64_t n = a.integer("num");
    Progress prog("eval " + sampler.name, int(chunks_of(n, gopt.batch) * steps), !a.has("quiet"));
    gopt.progress = [&](int64_t done, int64_t) { prog.update(int(done)); };
    auto s = generate_balanced(model, sampler, sigmas, n, guidance, uint64_t(a.integer("seed")), gopt);
    prog.finish();
    r = ev->evaluate(s.images, s.labels);
    char b[256];
    std::snprintf(b, sizeof b, "%ld samples of %s: %s, %s, %d steps, %d NFE, ", (long)r.n, spec.c_str(),
                  sampler.name.c_str(), a.str("schedule").c_str(), steps, s.nfe);
    what = b + guidance.describe();
    j.update({{"model", spec}, {"sampler", sampler.name}, {"schedule", a.str("schedule")}, {"steps", steps},
              {"nfe", s.nfe}, {"cfg", cfg}, {"guidance", guidance.describe()}, {"seed", a.integer("seed")}});
  }
  std::printf("FID %.3f", r.fid);
  if (r.accuracy >= 0) std::printf("  class accuracy %s", percent(r.accuracy).c_str());
  if (r.precision >= 0) std::printf("  precision %.3f  recall %.3f", r.precision, r.recall);
  std::printf("  (%s; reference %s, %ld images, classifier accuracy %s)\n", what.c_str(), a.str("reference").c_str(),
              (long)ev->reference().n, ev->reference_accuracy() >= 0 ? percent(ev->reference_accuracy()).c_str() : "n/a");
  if (r.accuracy >= 0) {
    std::printf("per class:");
    for (size_t c = 0; c < r.class_accuracy.size(); ++c)
      if (r.class_accuracy[c] >= 0) std::printf(" %zu:%s", c, percent(r.class_accuracy[c]).c_str());
    std::printf("\n");
  }
  if (a.has("json")) {
    j.update({{"fid", r.fid}, {"n", r.n}, {"reference", a.str("reference")}, {"reference_n", ev->reference().n}});
    if (r.accuracy >= 0) j.update({{"accuracy", r.accuracy}, {"class_accuracy", r.class_accuracy}});
    if (r.precision >= 0) j.update({{"precision", r.precision}, {"recall", r.recall}});
    write_file_atomic(a.str("json"), j.dump(2) + "\n");
  }
  return 0;
}

CommandRegistrar reg({"eval", "FID and class accuracy of samples, judged by the shipped classifier", run});

}  // namespace
}  // namespace tweedie::cli
