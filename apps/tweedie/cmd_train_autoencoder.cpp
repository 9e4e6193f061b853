// tweedie train-autoencoder: train an AutoencoderKL first stage (train/autoencoder_training.h).
#include <cstdio>
#include <filesystem>

#include "cli.h"
#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/train/autoencoder_training.h"

namespace tweedie::cli {
namespace {

int run(int argc, char** argv) {
  Args a("train-autoencoder", "--config FILE.json -o DIR [--resume]",
         {{"config", "c", false, "training config (JSON; keys in include/tweedie/train/autoencoder_training.h)", ""},
          {"output", "o", false, "output directory (created if missing)", ""},
          {"resume", "", true, "continue from DIR/checkpoint.safetensors", ""},
          {"steps", "", false, "override the config's total steps", ""},
          {"quiet", "q", true, "no progress on stderr", ""}});
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie train-autoencoder: unexpected argument '", a.positional().empty() ? "" : a.positional()[0], "'");
  check(a.has("config") && a.has("output"), "tweedie train-autoencoder: --config and --output are required");
  std::string text = read_file(a.str("config"));
  AutoencoderTrainConfig cfg = AutoencoderTrainConfig::parse(text, a.str("config"));
  if (a.has("steps")) {
    int s = a.integer("steps");
    check(s >= 1, "tweedie train-autoencoder: --steps must be >= 1");
    cfg.set_steps(s);
  }
  const std::string out = a.str("output");
  if (!is_directory(out)) {
    std::error_code ec;
    std::filesystem::create_directories(out, ec);
    check(!ec, "tweedie train-autoencoder: cannot create output directory '", out, "': ", ec.message());
  }
  AutoencoderTrainer t(cfg, out, a.has("resume"));
  Progress prog("train-autoencoder", int(cfg.steps), !a.has("quiet"));
  char buf[96];
  t.run([&](const TrainStats& s) {
    std::snprintf(buf, sizeof buf, "loss %.4f  lr %.2e  %.0f img/s", s.loss, s.lr, s.images_per_s);
    prog.update(int(s.step), buf);
  });
  prog.finish();
  auto ev = t.evaluate();
  std::fprintf(stderr, "wrote %s/model.safetensors (%ld steps): test PSNR %.2f dB, latent std %.4f, scaling_factor %.5f\n",
               out.c_str(), (long)t.step(), ev.psnr, ev.latent_std, ev.scaling_factor);
  return 0;
}

CommandRegistrar reg({"train-autoencoder", "train an AutoencoderKL (the latent first stage) from a JSON config", run});

}  // namespace
}  // namespace tweedie::cli
