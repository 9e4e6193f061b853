// tweedie bench speed: training throughput and sampling time on this machine.
//
//   train fp32 / bf16   Trainer::train_step() with the default model's config
//       (configs/fashion_mnist.json: ADM UNet, 1.74M parameters, min-SNR
//       v-loss) on Fashion-MNIST: batch, noise levels, forward + loss (under
//       bf16 autocast for bf16), backward, clipping, AdamW, EMA. Images/s.
//   grid fp32 / bf16, CFG 1 / 3   one 16-image grid with the shipped model,
//       20 steps of DEIS on the Karras schedule, labels 0..9 cycling, made by
//       generate() as `tweedie sample` makes it. Seconds per grid.
// Each measurement: one warm-up, then repetitions of at least --min-time
// seconds each; the table reports the median repetition. Writes speed.md.
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <sstream>

#include "bench_common.h"
#include "cli.h"
#include "model_spec.h"
#include "tweedie/core/error.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/io/fs.h"
#include "tweedie/models/net_denoiser.h"
#include "tweedie/process/schedule.h"
#include "tweedie/sample/generate.h"
#include "tweedie/train/trainer.h"

namespace tweedie::cli {
namespace {

int bench_speed(int argc, char** argv) {
  Args a("bench speed", "[options]",
         {{"config", "c", false, "training config", std::string(TWEEDIE_SOURCE_DIR) + "/configs/fashion_mnist.json"},
          {"model", "m", false, "model for the sampling rows (default: the shipped Fashion-MNIST model)", ""},
          {"grid", "", false, "images per grid", "16"},
          {"steps", "", false, "sampling steps per grid", "20"},
          {"reps", "", false, "repetitions per measurement (the table shows the median)", "3"},
          {"min-time", "", false, "seconds per repetition (at least one call)", "2"},
          {"out", "o", false, "output directory for speed.md", "bench/results"},
          {"quiet", "q", true, "no progress on stderr", ""}});
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie bench speed: unexpected argument '", a.positional().empty() ? "" : a.positional()[0], "'");
  const int reps = a.integer("reps"), grid = a.integer("grid"), steps = a.integer("steps");
  const double min_time = a.number("min-time");
  check(reps >= 1, "tweedie bench speed: --reps must be >= 1");
  check(grid >= 1, "tweedie bench speed: --grid must be >= 1");
  check(steps >= 1, "tweedie bench speed: --steps must be >= 1");
  check(min_time >= 0, "tweedie bench speed: --min-time must be >= 0");
  const std::string outdir = a.str("out");
  check(is_directory(outdir), "tweedie bench speed: output directory '", outdir, "' does not exist");
  const std::string load = first_line_with("/proc/loadavg", "");

  struct Row {
    std::string what;
    Timing t;
    double items;  // images per call
  };
  std::vector<Row> rows;
  Progress prog("bench speed", 6 * reps, !a.has("quiet"));
  int done = 0;

  // Training: the trainer's own step on the real data.
  const std::string cfg_path = a.str("config");
  const std::string cfg_text = read_file(cfg_path);
  const std::filesystem::path scratch =
      std::filesystem::temp_directory_path() / ("tweedie-bench-speed-" + std::to_string(::getpid()));
  std::filesystem::create_directories(scratch);
  int64_t batch = 0;
  try {
    for (bool bf16 : {false, true}) {
      TrainConfig c = TrainConfig::parse(cfg_text, cfg_path);
      c.bf16 = bf16;
      c.set_steps(1000000);
      batch = c.batch_size;
      Trainer tr(c, scratch.string(), false);
      rows.push_back({std::string("training step, batch ") + std::to_string(batch) + (bf16 ? ", bf16 autocast" : ", fp32"),
                      measure([&] { tr.train_step(); }, reps, min_time, prog, done), double(batch)});
    }
  } catch (...) {
    std::filesystem::remove_all(scratch);
    throw;
  }
  std::filesystem::remove_all(scratch);

  // Sampling: a class-cycling grid made as `tweedie sample` makes it.
  const std::string model_path = a.has("model") ? a.str("model") : default_model_path();
  LoadedModel model = load_model(model_path, "", "");
  auto* nd = dynamic_cast<NetDenoiser*>(model.denoiser.get());
  check(nd != nullptr && model.num_classes > 0, "tweedie bench speed: the sampling rows need a class-conditional network model");
  const SamplerInfo& sampler = find_sampler("deis");
  const std::vector<double> sigmas = make_schedule("karras", model.denoiser->process(), steps, ScheduleOptions{});
  std::vector<int64_t> shape{grid};
  shape.insert(shape.end(), model.sample_shape.begin(), model.sample_shape.end());
  Cond cond;
  cond.labels = torch::arange(grid, torch::kInt64).remainder(model.num_classes);
  int nfe = 0;
  for (bool bf16 : {false, true}) {
    nd->set_dtype(bf16 ? torch::kBFloat16 : torch::kFloat32);
    for (double cfg : {1.0, 3.0}) {
      DenoiserPtr den = model.denoiser;
      if (cfg != 1.0) den = std::make_shared<CFGDenoiser>(den, cfg);
      auto call = [&] {
        torch::NoGradGuard ng;
        auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
        auto noise = at::randn(shape, gen, torch::kFloat32);
        nfe = generate(*den, sampler, sigmas, noise, cond, GenerateOptions{}, gen).nfe;
      };
      rows.push_back({std::to_string(grid) + "-image grid, " + std::to_string(steps) + " steps" +
                          (cfg != 1.0 ? ", CFG 3" : "") + (bf16 ? ", bf16" : ", fp32"),
                      measure(call, reps, min_time, prog, done), double(grid)});
    }
  }
  prog.finish();

  std::ostringstream md;
  md << "# Speed\n\n`tweedie bench speed";
  for (int i = 0; i < argc; ++i) md << ' ' << argv[i];
  md << "`\n\nTraining: `Trainer::train_step()` with `" << std::filesystem::path(cfg_path).filename().string()
     << "` on its data (batch, noise levels, forward + loss, backward, gradient clipping, AdamW, EMA). "
     << "Sampling: one grid from `" << std::filesystem::path(model_path).filename().string() << "`, DEIS on the "
     << "Karras schedule (" << nfe << " NFE), labels cycling over the classes, made by `generate()` as `tweedie sample` "
     << "makes it. Median of " << reps << " repetitions of at least " << min_time << " s each (after one warm-up).\n\n"
     << "| what | time (median) | min | max | images/s |\n|---|---|---|---|---|\n";
  for (auto& r : rows)
    md << "| " << r.what << " | " << fmt_time(r.t.median) << " | " << fmt_time(r.t.min) << " | " << fmt_time(r.t.max)
       << " | " << fmt("%.1f", r.items / r.t.median) << " |\n";
  md << "\n" << machine_bullets(load);
  write_file_atomic(outdir + "/speed.md", md.str());
  std::printf("%s", md.str().c_str());
  return 0;
}

BenchRegistrar reg({"speed", "training images/s and time per sample grid, fp32 and bf16 (writes speed.md)", bench_speed});

}  // namespace
}  // namespace tweedie::cli
