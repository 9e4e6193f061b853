// tweedie sample: draw samples from a model with any sampler and schedule.
#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>

#include "cli.h"
#include "model_spec.h"
#include "sampling_args.h"
#include "tweedie/core/error.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/npy.h"
#include "tweedie/io/plot.h"

namespace tweedie::cli {
namespace {

int run(int argc, char** argv) {
  auto opts = sampling_opts("deis", "karras", 20);
  std::vector<Args::Opt> own = {
      {"model", "m", false, "model: gmm:FILE.json", ""},
      {"process", "", false, "process for analytic models (vp, vp:cosine, vp+ztsnr, vp-cont, ve, edm, flow)", "vp"},
      {"prediction", "", false, "parameterization the analytic model reports in (eps, x0, v, velocity, score, edm)", "x0"},
      {"num", "n", false, "number of samples", "1024"},
      {"seed", "", false, "random seed", "0"},
      {"output", "o", false, "output file: .npy (float32 [N, ...]) or .png (scatter plot, 2-D models)", ""},
      {"plot", "", false, "also write a scatter plot PNG here (2-D models)", ""},
      {"init-noise", "", false, "start from this standard-normal .npy [N, ...]: x = sigma_max * noise", ""},
      {"class", "", false, "class label for conditional models", ""},
      {"cfg", "", false, "classifier-free guidance scale (needs --class)", "1"},
      {"quiet", "q", true, "no progress on stderr", ""},
  };
  opts.insert(opts.begin(), own.begin(), own.end());
  Args a("sample", "-m MODEL [options] -o OUT.npy|OUT.png", opts);
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie sample: unexpected argument '", a.positional().empty() ? "" : a.positional()[0], "'");
  check(a.has("model"), "tweedie sample: --model is required (e.g. -m gmm:models/gmm/ring2d.json)");
  check(a.has("output"), "tweedie sample: --output is required (.npy or .png)");
  const std::string out = a.str("output");
  check(ends_with(out, ".npy") || ends_with(out, ".png"), "tweedie sample: --output must end in .npy or .png, got '", out, "'");

  const SamplerInfo& sampler = find_sampler(a.str("sampler"));
  SamplerOptions sopt = sampler_options(a);
  ScheduleOptions schopt = schedule_options(a);
  LoadedModel model = load_model(a.str("model"), a.str("process"), a.str("prediction"));
  const Process& proc = model.denoiser->process();
  const int steps = a.integer("steps");
  std::vector<double> sigmas = make_schedule(a.str("schedule"), proc, steps, schopt);

  Cond cond;
  DenoiserPtr den = model.denoiser;
  int n = a.integer("num");
  check(n >= 1, "tweedie sample: -n must be >= 1 (got ", n, ")");
  if (a.has("class")) {
    check(model.num_classes > 0, "tweedie sample: --class given but the model has no classes");
    int c = a.integer("class");
    check(c >= 0 && c < model.num_classes, "tweedie sample: --class ", c, " out of range [0, ", model.num_classes, ")");
    cond.labels = torch::full({n}, c, torch::kInt64);
  }
  const double cfg = a.number("cfg");
  if (cfg != 1.0) {
    check(cond.labels.defined(), "tweedie sample: --cfg needs --class");
    den = std::make_shared<CFGDenoiser>(den, cfg);
  }

  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(a.integer("seed")));
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), model.sample_shape.begin(), model.sample_shape.end());
  torch::Tensor noise;
  if (a.has("init-noise")) {
    noise = load_npy(a.str("init-noise")).to(torch::kFloat32);
    check(torch::isfinite(noise).all().item<bool>(), a.str("init-noise"), ": contains NaN or infinity");
    std::vector<int64_t> want(shape.begin() + 1, shape.end());
    check(noise.dim() == int64_t(want.size()) + 1 && noise.sizes().slice(1).vec() == want, a.str("init-noise"),
          ": shape ", noise.sizes(), " does not match [N, ", c10::IntArrayRef(want), "]");
    n = noise.size(0);
    check(n >= 1, a.str("init-noise"), ": holds no samples");
    if (cond.labels.defined()) cond.labels = torch::full({n}, cond.labels[0].item<int64_t>(), torch::kInt64);
  } else {
    noise = at::randn(shape, gen, torch::kFloat32);
  }
  torch::Tensor x = noise * sigmas.front();

  SamplerRun runner(*den, sigmas, cond, sopt, gen);
  Progress prog(sampler.name, steps, !a.has("quiet"));
  runner.callback = [&](const StepInfo& st) { prog.update(st.step + 1); };
  x = run_sampler(sampler, runner, x);
  prog.finish();
  check(torch::isfinite(x).all().item<bool>(), "sampling produced non-finite values");

  auto scatter = [&](const std::string& path) {
    check(x.dim() == 2 && x.size(1) == 2, path, ": scatter plots need a 2-D model (this one has shape ",
          c10::IntArrayRef(model.sample_shape), "); write .npy instead");
    auto c = x.to(torch::kFloat64).contiguous();
    Series s{"samples", {}, {}, true};
    for (int64_t i = 0; i < c.size(0); ++i) s.x.push_back(c[i][0].item<double>()), s.y.push_back(c[i][1].item<double>());
    PlotOptions po;
    po.title = sampler.name + ", " + a.str("schedule") + ", " + std::to_string(steps) + " steps, " +
               std::to_string(runner.nfe) + " NFE";
    po.equal_aspect = true;
    po.point_radius = 2;
    po.point_alpha = 0.5;
    po.width = po.height = 700;
    po.legend = false;
    write_png(path, plot({s}, po));
  };
  if (ends_with(out, ".npy")) save_npy(out, x);
  else scatter(out);
  if (a.has("plot")) scatter(a.str("plot"));
  std::fprintf(stderr, "wrote %s (%d samples, %d NFE, %s)\n", out.c_str(), n, runner.nfe, model.description.c_str());
  return 0;
}

CommandRegistrar reg({"sample", "draw samples from a model with any sampler and schedule", run});

}  // namespace
}  // namespace tweedie::cli
