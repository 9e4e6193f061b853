// tweedie restore: degrade a clean image with an inverse-problem operator
// (inpainting, super-resolution, blur, compressed sensing, denoising),
// restore it with a zero-shot diffusion solver (DDNM, DDNM+, DDRM, PiGDM, DPS,
// MCG, RePaint, Blended Diffusion) or a baseline (A^+ y, bicubic, Tikhonov)
// and report the PSNR of the pseudo-inverse A^+ y and the PSNR and SSIM of
// the restoration against the clean input.
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdio>
#include <fstream>

#include "cli.h"
#include "model_spec.h"
#include "tweedie/core/error.h"
#include "tweedie/eval/image_metrics.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/process/schedule.h"
#include "tweedie/restore/solver.h"

namespace tweedie::cli {
namespace {

// Images in [-1, 1] -> [0, 1], clamped, for the metrics.
torch::Tensor unit(const torch::Tensor& x) { return ((x + 1) / 2).clamp(0, 1); }

// The solvers that take an option, for "--opt applies to a, b only".
std::string solvers_with(bool RestoreSolverInfo::*flag) {
  std::string names;
  for (auto& s : restore_solvers())
    if (s.*flag) names += (names.empty() ? "" : ", ") + s.name;
  return names;
}

int run(int argc, char** argv) {
  std::string tasks, solvers;
  for (auto& t : task_names()) tasks += (tasks.empty() ? "" : "|") + t;
  for (auto& s : restore_solvers()) solvers += (solvers.empty() ? "" : "|") + s.name;
  Args a("restore", "--task TASK [--solver SOLVER] [options] IN.png -o OUT.png",
         {
             {"task", "", false, "degradation: " + tasks +
                                     " (inpaint-random: half the pixels; sr2, sr4: average pooling; blur: Gaussian, "
                                     "std 1.5 px; motion-blur: 7 px at 45 degrees; cs: 25 % random projections)", ""},
             {"solver", "", false, "restoration solver (pinv, bicubic, tikhonov: baselines): " + solvers, "ddnm"},
             {"sigma-y", "", false, "standard deviation of the measurement noise (images in [-1, 1])", "0"},
             {"model", "m", false, "model file (.safetensors; default: the shipped Fashion-MNIST model)", ""},
             {"class", "", false, "class name or index for conditional models (default: unconditional)", ""},
             {"output", "o", false, "restored image (.png); the degraded y is written next to it as OUT_y.png "
                                    "(A^+ y where y is not an image: cs)", ""},
             {"steps", "s", false, "number of steps", "50"},
             {"schedule", "", false, "step schedule (see 'tweedie samplers')", "karras"},
             {"eta", "", false, "fresh-noise fraction of each step, in [0, 1] (default: the solver's: 0.85 for "
                                "ddnm, ddnm+ and ddrm, 1 for pigdm, dps and mcg; blended: the sampler's)", ""},
             {"eta-b", "", false, "ddrm: weight of y on coordinates measured with less noise than the state", "1"},
             {"travel-length", "", false, "ddnm+, repaint: time-travel (resampling) jump length L", "5"},
             {"travel-repeat", "", false, "ddnm+, repaint: time-travel (resampling) repeats r (1 = none)", "2"},
             {"zeta", "", false, "dps, mcg: step size of the measurement gradient", "1"},
             {"sampler", "", false, "blended: the sampler of each step (see 'tweedie samplers')", "ddpm"},
             {"seed", "", false, "random seed (noise, random mask or projection, measurement noise)", "0"},
             {"quiet", "q", true, "no progress on stderr", ""},
         });
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().size() == 1, "tweedie restore: expected one input image (IN.png), got ", a.positional().size());
  check(a.has("task"), "tweedie restore: --task is required (", tasks, ")");
  check(a.has("output"), "tweedie restore: --output is required (.png)");
  const std::string in = a.positional()[0], out = a.str("output");
  check(ends_with(out, ".png"), "tweedie restore: --output must end in .png, got '", out, "'");
  const std::string out_y = out.substr(0, out.size() - 4) + "_y.png";
  const RestoreSolverInfo& solver = find_restore_solver(a.str("solver"));
  const double sigma_y = a.number("sigma-y");
  check(std::isfinite(sigma_y) && sigma_y >= 0, "tweedie restore: --sigma-y must be >= 0 (got ", a.str("sigma-y"), ")");
  RestoreOptions ro;
  if (a.has("eta")) {
    ro.eta = a.number("eta");
    check(ro.eta >= 0 && ro.eta <= 1, "tweedie restore: --eta must be in [0, 1] (got ", a.str("eta"), ")");
  }
  check(!a.has("eta-b") || solver.uses_eta_b, "tweedie restore: --eta-b applies to ddrm only, not ", solver.name);
  ro.eta_b = a.number("eta-b");
  check(ro.eta_b >= 0 && ro.eta_b <= 1, "tweedie restore: --eta-b must be in [0, 1] (got ", a.str("eta-b"), ")");
  check(!(a.has("travel-length") || a.has("travel-repeat")) || solver.time_travel,
        "tweedie restore: --travel-length and --travel-repeat apply to ",
        solvers_with(&RestoreSolverInfo::time_travel), " only, not ", solver.name);
  ro.travel_length = a.integer("travel-length");
  ro.travel_repeat = a.integer("travel-repeat");
  check(ro.travel_length >= 1, "tweedie restore: --travel-length must be >= 1 (got ", ro.travel_length, ")");
  check(ro.travel_repeat >= 1, "tweedie restore: --travel-repeat must be >= 1 (got ", ro.travel_repeat, ")");
  check(!a.has("zeta") || solver.uses_zeta, "tweedie restore: --zeta applies to ",
        solvers_with(&RestoreSolverInfo::uses_zeta), " only, not ", solver.name);
  check(!a.has("sampler") || solver.uses_sampler, "tweedie restore: --sampler applies to ",
        solvers_with(&RestoreSolverInfo::uses_sampler), " only, not ", solver.name);
  ro.sampler = a.str("sampler");
  find_sampler(ro.sampler);
  ro.zeta = a.number("zeta");
  check(ro.zeta >= 0, "tweedie restore: --zeta must be >= 0 (got ", a.str("zeta"), ")");
  const int steps = a.integer("steps");
  check(steps >= 1, "tweedie restore: --steps must be >= 1 (got ", steps, ")");
  // Bad input fails before the model loads: the task's name, the image.
  make_task_operator(a.str("task"), {1, 8, 8});
  Image img = read_png(in);

  std::string spec = a.str("model");
  if (spec.empty()) {
    spec = default_model_path();
    check(std::ifstream(spec).good(), "tweedie restore: no --model given and the default model ", spec, " is missing");
  }
  check(ends_with(spec, ".safetensors"), "tweedie restore: --model must be an image model file (.safetensors), got '",
        spec, "'");
  LoadedModel model = load_model(spec, "", "");
  const auto& shape = model.sample_shape;  // [C, H, W]
  check(img.channels == shape[0] || (img.channels == 4 && shape[0] == 3), in, ": ", img.channels,
        " channel(s), the model takes ", shape[0]);
  check(img.height == shape[1] && img.width == shape[2], in, ": ", img.width, "x", img.height,
        " pixels, the model takes ", shape[2], "x", shape[1]);
  torch::Tensor x = image_to_tensor(img).slice(0, 0, shape[0]).unsqueeze(0);  // [1, C, H, W] in [-1, 1]
  Cond cond;
  if (a.has("class")) cond.labels = class_labels(model, a.str("class"), 1);

  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(a.integer("seed")));
  OperatorPtr op = make_task_operator(a.str("task"), shape, gen);
  Measurement m{op, op->measure(x, sigma_y, gen), sigma_y};
  const Process& proc = model.denoiser->process();
  std::vector<double> sigmas = make_schedule(a.str("schedule"), proc, steps);

  torch::NoGradGuard no_grad;
  SamplerRun run(*model.denoiser, sigmas, cond, {}, gen);
  Progress prog(solver.name, std::max(1, restore_nfe(solver, steps, ro)), !a.has("quiet") && !solver.baseline);
  run.callback = [&](const StepInfo&) { prog.update(run.nfe); };
  torch::Tensor x_start = at::randn(x.sizes(), gen, x.options()) * sigmas[0];
  torch::Tensor restored = run_restore(solver, run, m, x_start, ro);
  prog.finish();
  check(torch::isfinite(restored).all().item<bool>(), "restoration produced non-finite values");

  const torch::Tensor pinv_y = op->pinv(m.y);
  const double p_pinv = psnr(unit(pinv_y), unit(x)).item<double>(), p_out = psnr(unit(restored), unit(x)).item<double>();
  const double s_out = ssim(unit(restored), unit(x)).item<double>();
  write_png(out_y, tensor_to_image((op->out_shape().size() == 3 ? m.y : pinv_y)[0].clamp(-1, 1)));
  Image res = tensor_to_image(restored[0].clamp(-1, 1));
  res.text["parameters"] = "restore --task " + a.str("task") + " --solver " + solver.name + " --sigma-y " +
                           a.str("sigma-y") + " --steps " + std::to_string(steps) + " --seed " + a.str("seed");
  write_png(out, res);
  std::printf("%s, %s, sigma_y %g, %d steps (%d NFE): PSNR A^+y %.2f dB, restored %.2f dB, SSIM %.4f\n",
              op->name().c_str(), solver.name.c_str(), sigma_y, steps, run.nfe, p_pinv, p_out, s_out);
  if (!a.has("quiet")) std::fprintf(stderr, "wrote %s and %s\n", out.c_str(), out_y.c_str());
  return 0;
}

CommandRegistrar reg({"restore", "restore a degraded image (inpainting, super-resolution, deblurring, denoising)", run});

}  // namespace
}  // namespace tweedie::cli
