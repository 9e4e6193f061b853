// tweedie train: train a diffusion model from a JSON config (train/trainer.h).
#include <cstdio>
#include <filesystem>

#include "cli.h"
#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/train/trainer.h"

namespace tweedie::cli {
namespace {

int run(int argc, char** argv) {
  Args a("train", "--config FILE.json -o DIR [--resume]",
         {{"config", "c", false, "training config (JSON; keys in src/train/trainer.h and the README)", ""},
          {"output", "o", false, "output directory (created if missing)", ""},
          {"resume", "", true, "continue from DIR/checkpoint.safetensors", ""},
          {"steps", "", false, "override the config's total steps", ""},
          {"quiet", "q", true, "no progress on stderr", ""}});
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie train: unexpected argument '", a.positional().empty() ? "" : a.positional()[0], "'");
  check(a.has("config") && a.has("output"), "tweedie train: --config and --output are required");
  std::string text = read_file(a.str("config"));
  TrainConfig cfg = TrainConfig::parse(text, a.str("config"));
  if (a.has("steps")) {
    int s = a.integer("steps");
    check(s >= 1, "tweedie train: --steps must be >= 1");
    cfg.set_steps(s);
  }
  const std::string out = a.str("output");
  if (!is_directory(out)) {
    std::error_code ec;
    std::filesystem::create_directories(out, ec);
    check(!ec, "tweedie train: cannot create output directory '", out, "': ", ec.message());
  }
  Trainer t(cfg, out, a.has("resume"));
  Progress prog("train", int(cfg.steps), !a.has("quiet"));
  char buf[96];
  t.run([&](const TrainStats& s) {
    std::snprintf(buf, sizeof buf, "loss %.4f  lr %.2e  %.0f img/s", s.loss, s.lr, s.images_per_s);
    prog.update(int(s.step), buf);
  });
  prog.finish();
  std::fprintf(stderr, "wrote %s/model.safetensors (%ld steps)\n", out.c_str(), (long)t.step());
  return 0;
}

CommandRegistrar reg({"train", "train a diffusion model from a JSON config", run});

}  // namespace
}  // namespace tweedie::cli
