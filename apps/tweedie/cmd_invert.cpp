// tweedie invert: map data to noise by running an invertible sampler backwards
// (DDIM inversion and its higher-order relatives), then check the round trip.
#include <cstdio>

#include "cli.h"
#include "model_spec.h"
#include "sampling_args.h"
#include "tweedie/core/error.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/npy.h"

namespace tweedie::cli {
namespace {

int run(int argc, char** argv) {
  auto opts = sampling_opts("ddim", "karras", 50);
  std::vector<Args::Opt> own = {
      {"model", "m", false, "model: gmm:FILE.json", ""},
      {"process", "", false, "process for analytic models (default vp)", ""},
      {"prediction", "", false, "parameterization an analytic model reports in (default x0)", ""},
      {"input", "i", false, "data to invert, .npy [N, ...]", ""},
      {"output", "o", false, "noise out, .npy [N, ...]: x(sigma_max) / sigma_max, usable as --init-noise", ""},
      {"class", "", false, "class label for conditional models", ""},
      {"cfg", "", false, "guidance scale used during inversion and reconstruction", "1"},
      {"quiet", "q", true, "no progress on stderr", ""},
  };
  opts.insert(opts.begin(), own.begin(), own.end());
  Args a("invert", "-m MODEL -i DATA.npy -o NOISE.npy [options]", opts);
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie invert: unexpected argument '", a.positional().empty() ? "" : a.positional()[0], "'");
  check(a.has("model") && a.has("input") && a.has("output"), "tweedie invert: --model, --input and --output are required");
  check(ends_with(a.str("output"), ".npy"), "tweedie invert: --output must end in .npy");
  const SamplerInfo& sampler = find_sampler(a.str("sampler"));
  require_invertible(sampler);
  LoadedModel model = load_model(a.str("model"), a.str("process"), a.str("prediction"));
  const Process& proc = model.denoiser->process();
  std::vector<double> down = make_schedule(a.str("schedule"), proc, sampling_steps(a, sampler), schedule_options(a));
  down.pop_back();  // inversion starts at the lowest positive level, with the data as the state there
  check(down.size() >= 2, "tweedie invert: needs at least 2 steps");
  std::vector<double> up(down.rbegin(), down.rend());

  auto x = load_npy(a.str("input")).to(torch::kFloat32);
  check(torch::isfinite(x).all().item<bool>(), a.str("input"), ": contains NaN or infinity");
  std::vector<int64_t> want = model.sample_shape;
  check(x.dim() == int64_t(want.size()) + 1 && x.sizes().slice(1).vec() == want && x.size(0) >= 1, a.str("input"),
        ": shape ", x.sizes(), " does not match [N, ", c10::IntArrayRef(want), "]");
  const int64_t n = x.size(0);
  Cond cond;
  DenoiserPtr den = model.denoiser;
  if (a.has("class")) {
    int c = a.integer("class");
    check(c >= 0 && c < model.num_classes, "tweedie invert: --class ", c, " out of range [0, ", model.num_classes, ")");
    cond.labels = torch::full({n}, c, torch::kInt64);
  }
  if (a.number("cfg") != 1.0) {
    check(cond.labels.defined(), "tweedie invert: --cfg needs --class");
    den = std::make_shared<CFGDenoiser>(den, a.number("cfg"));
  }
  SamplerOptions sopt = sampler_options(a);
  SamplerRun inv(*den, up, cond, sopt);
  Progress prog("invert " + sampler.name, inv.steps(), !a.has("quiet"));
  inv.callback = [&](const StepInfo& st) { prog.update(st.step + 1); };
  auto xT = run_inversion(sampler, inv, x);
  prog.finish();
  check(torch::isfinite(xT).all().item<bool>(), "inversion produced non-finite values");
  save_npy(a.str("output"), xT / up.back());
  SamplerRun back(*den, down, cond, sopt);
  auto rec = run_sampler(sampler, back, xT);
  double err = (rec - x).abs().mean().item<double>(), rel = ((rec - x).norm() / x.norm()).item<double>();
  std::printf("inverted %ld samples with %s, %d steps (%d NFE); reconstruction: mean abs error %.3g, relative %.3g\n",
              (long)n, sampler.name.c_str(), inv.steps(), inv.nfe, err, rel);
  return 0;
}

CommandRegistrar reg({"invert", "invert data to noise with a deterministic sampler; prints the round-trip error", run});

}  // namespace
}  // namespace tweedie::cli
