// tweedie eval: FID, precision/recall and class accuracy of a model's samples (or of a folder
// of PNGs written by `tweedie sample -o DIR/`) in the feature space of the
// shipped classifier, against the Fashion-MNIST test set (eval/evaluator.h).
#include <cstdio>
#include <filesystem>
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
      {"model", "m", false, "model file to sample (default: the shipped Fashion-MNIST model)", ""},
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
