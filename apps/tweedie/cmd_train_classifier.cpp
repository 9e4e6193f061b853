// tweedie train-classifier: train the evaluation classifier
// (train/classifier_training.h) and report its test accuracy.
#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "tweedie/core/error.h"
#include "model_spec.h"
#include "tweedie/io/fs.h"
#include "tweedie/models/net_denoiser.h"
#include "tweedie/train/classifier_training.h"

namespace tweedie::cli {
namespace {

int run(int argc, char** argv) {
  Args a("train-classifier", "[-c CONFIG.json] -o FILE.safetensors",
         {{"config", "c", false, "config (JSON; keys in include/tweedie/train/classifier_training.h; default: all defaults)", ""},
          {"output", "o", false, "output model file (.safetensors)", ""},
          {"epochs", "", false, "override the config's epochs", ""},
          {"noisy", "", true, "train the noise-conditional classifier of classifier guidance on x_t of the default model's process (config key noise_process)", ""},
          {"quiet", "q", true, "no progress on stderr", ""}});
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie train-classifier: unexpected argument '",
        a.positional().empty() ? "" : a.positional()[0], "'");
  check(a.has("output"), "tweedie train-classifier: --output is required");
  const std::string out = a.str("output");
  check(ends_with(out, ".safetensors"), "tweedie train-classifier: --output must end in .safetensors, got '", out, "'");
  std::string text = a.has("config") ? read_file(a.str("config")) : "{}";
  if (a.has("epochs") || a.has("noisy")) {
    auto j = nlohmann::json::parse(text, nullptr, false);
    check(j.is_object(), a.str("config"), ": malformed JSON");
    if (a.has("epochs")) {
      check(a.integer("epochs") >= 1, "tweedie train-classifier: --epochs must be >= 1");
      j["epochs"] = a.integer("epochs");
    }
    if (a.has("noisy") && !j.contains("noise_process"))
      j["noise_process"] = load_model_file(default_model_path()).denoiser->process().name();
    text = j.dump();
  }
  auto cfg = ClassifierTrainConfig::parse(text, a.has("config") ? a.str("config") : "classifier training");
  std::unique_ptr<Progress> bar;
  char buf[96];
  auto res = train_classifier(cfg, out, [&](const TrainStats& s) {
    if (a.has("quiet")) return;
    if (!bar) bar = std::make_unique<Progress>("train-classifier", int(s.total));
    std::snprintf(buf, sizeof buf, "loss %.4f  lr %.2e  %.0f img/s", s.loss, s.lr, s.images_per_s);
    bar->update(int(s.step), buf);
  });
  if (bar) bar->finish();
  std::printf("test accuracy %.2f%% on %s%s (%ld steps, %.0f s)\n", 100 * res.test_accuracy, cfg.test_data.c_str(),
              cfg.noise_process.empty() ? "" : (", noised by " + cfg.noise_process + " at uniform timesteps").c_str(),
              (long)res.steps, res.seconds);
  std::fprintf(stderr, "wrote %s\n", out.c_str());
  return 0;
}

CommandRegistrar reg({"train-classifier", "train the evaluation classifier (FID features, class accuracy)", run});

}  // namespace
}  // namespace tweedie::cli
