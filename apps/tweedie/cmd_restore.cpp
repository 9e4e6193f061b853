// tweedie restore: degrade a clean image with an inverse-problem operator
// (inpainting, super-resolution, blur, compressed sensing, denoising), or
// take a real degraded image (--measured, with --mask for inpainting),
// restore it with a zero-shot diffusion solver (DDNM, DDNM+, DDRM, PiGDM, DPS,
// MCG, RePaint, Blended Diffusion; on text-conditioned latent models latent
// DPS, PSLD, ReSample and blended latent inpainting) or a baseline (A^+ y,
// bicubic, Tikhonov), and report the PSNR of the pseudo-inverse A^+ y and the
// PSNR and SSIM of the restoration against the clean input (or, for a real
// measurement, how well the restoration meets it).
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdio>
#include <fstream>

#include "cli.h"
#include "method_flags.h"
#include "model_spec.h"
#include "tweedie/core/error.h"
#include "tweedie/eval/image_metrics.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/process/schedule.h"
#include "tweedie/restore/solver.h"

namespace tweedie::cli {
namespace {

// Images in [-1, 1] -> [0, 1], clamped, for the metrics.
torch::Tensor unit(const torch::Tensor& x) { return ((x + 1) / 2).clamp(0, 1); }

// Every solver's own options (method_flags.h).
DeclaredOptions declared_options() {
  DeclaredOptions out;
  for (const RestoreSolverInfo& s : restore_solvers()) out.push_back({s.name, &s.options});
  return out;
}

int run(int argc, char** argv) {
  std::string tasks, solvers;
  for (auto& t : task_names()) tasks += (tasks.empty() ? "" : "|") + t;
  for (auto& s : restore_solvers()) solvers += (solvers.empty() ? "" : "|") + s.name;
  std::vector<Args::Opt> opts = {
             {"task", "", false, "degradation: " + tasks +
                                     " (inpaint-random: half the pixels; sr2, sr4: average pooling; blur: Gaussian, "
                                     "std 1.5 px; motion-blur: 7 px at 45 degrees; cs: 25 % random projections)", ""},
             {"solver", "", false, "restoration solver (pinv, bicubic, tikhonov: baselines): " + solvers, "ddnm"},
             {"sigma-y", "", false, "standard deviation of the measurement noise (images in [-1, 1])", "0"},
             {"model", "m", false, "model file (.safetensors; default: the shipped Fashion-MNIST model) or a Stable "
                                   "Diffusion checkpoint (file or diffusers folder)", ""},
             {"class", "", false, "class name or index for conditional models (default: unconditional)", ""},
             {"output", "o", false, "restored image (.png); the degraded y is written next to it as OUT_y.png "
                                    "(A^+ y where y is not an image: cs)", ""},
             {"steps", "s", false, "number of steps", "50"},
             {"schedule", "", false, "step schedule (see 'tweedie samplers')", "karras"},
             {"seed", "", false, "random seed (noise, random mask or projection, measurement noise)", "0"},
             {"quiet", "q", true, "no progress on stderr", ""},
             {"measured", "", false, "a real degraded image y instead of a clean IN.png to degrade: the low-resolution "
                                     "image (sr*), the image with holes (inpaint-*, with --mask), the blurred or noisy "
                                     "image", ""},
             {"mask", "", false, "inpainting a --measured image: the mask image, white = missing (to fill)", ""},
             {"prompt", "p", false, "text models: the prompt of the restoration", ""},
             {"negative-prompt", "", false, "text models: CFG's negative prompt", ""},
             {"cfg", "", false, "classifier-free guidance scale of the denoiser the solver runs (1 = none)", "1"},
  };
  const auto text_opts = text_model_opts(), solver_opts = declared_option_flags(declared_options());
  opts.insert(opts.end(), text_opts.begin(), text_opts.end());
  opts.insert(opts.end(), solver_opts.begin(), solver_opts.end());
  Args a("restore", "--task TASK [--solver SOLVER] [options] (IN.png | --measured Y.png [--mask M.png]) -o OUT.png",
         opts);
  if (!a.parse(argc, argv)) return 0;
  const bool measured = a.has("measured");
  check(a.positional().size() == (measured ? 0u : 1u), "tweedie restore: expected ",
        measured ? "no input image with --measured" : "one input image (IN.png) or --measured Y.png", ", got ",
        a.positional().size());
  check(!a.has("mask") || measured, "tweedie restore: --mask is for a --measured image (a clean image is masked by "
        "the task)");
  check(a.has("task"), "tweedie restore: --task is required (", tasks, ")");
  check(a.has("output"), "tweedie restore: --output is required (.png)");
  const std::string in = measured ? a.str("measured") : a.positional()[0], out = a.str("output");
  check(ends_with(out, ".png"), "tweedie restore: --output must end in .png, got '", out, "'");
  const std::string out_y = out.substr(0, out.size() - 4) + "_y.png";
  const RestoreSolverInfo& solver = find_restore_solver(a.str("solver"));
  const double sigma_y = a.number("sigma-y");
  check(std::isfinite(sigma_y) && sigma_y >= 0, "tweedie restore: --sigma-y must be >= 0 (got ", a.str("sigma-y"), ")");
  // The solver's own options, checked against its declarations before any work.
  const RestoreOptions ro = given_option_values(a, declared_options(), solver.name, "tweedie restore");
  const MethodValues solver_values = ro.values_for(solver.options, "tweedie restore --solver " + solver.name);
  if (solver.uses_sampler()) find_sampler(solver_values.text("sampler"));
  const double cfg = a.number("cfg");
  check(std::isfinite(cfg), "tweedie restore: --cfg must be finite");
  const int steps = a.integer("steps");
  check(steps >= 1, "tweedie restore: --steps must be >= 1 (got ", steps, ")");
  // Bad input fails before the model loads: the task's name, the images.
  const std::string task = a.str("task");
  make_task_operator(task, {1, 8, 8});
  const bool inpaint = task == "inpaint-box" || task == "inpaint-random";
  check(!measured || task != "cs", "tweedie restore: --measured takes an image; compressed sensing (cs) measures "
        "random projections, not an image");
  check(!measured || !inpaint || a.has("mask"), "tweedie restore: inpainting a --measured image needs --mask (white = "
        "missing)");
  check(!a.has("mask") || inpaint, "tweedie restore: --mask applies to the inpaint tasks, not ", task);
  Image img = read_png(in);

  std::string spec = a.str("model");
  if (spec.empty()) {
    spec = default_model_path();
    check(std::ifstream(spec).good(), "tweedie restore: no --model given and the default model ", spec, " is missing");
  }
  LoadedModel model = load_model(spec, "", "", text_model_options(a));
  check(model.image, "tweedie restore: ", spec, " is not an image model");
  check(!model.text() || !a.has("class"), "tweedie restore: ", spec, " is a text model: give --prompt, not --class");
  check(model.text() || (!a.has("prompt") && !a.has("negative-prompt")), "tweedie restore: --prompt needs a text model");
  const std::vector<int64_t> native = model.image_shape();  // [C, H, W]
  const int64_t C = native[0];
  check(img.channels == C || (img.channels == 4 && C == 3) || (img.channels == 1 && C == 3 && model.text()), in, ": ",
        img.channels, " channel(s), the model takes ", C);
  torch::Tensor pic = image_to_tensor(img).slice(0, 0, C).unsqueeze(0);  // [1, c, h, w] in [-1, 1]
  if (pic.size(1) != C) pic = pic.expand({-1, C, -1, -1}).contiguous();
  // The image the operator acts on: the input's size, or the low-resolution measurement's times the factor.
  const int64_t f = task == "sr2" ? 2 : task.rfind("sr4", 0) == 0 ? 4 : 1;
  const int64_t H = measured ? pic.size(2) * f : pic.size(2), W = measured ? pic.size(3) * f : pic.size(3);
  if (model.text()) {
    check(H % model.size_multiple() == 0 && W % model.size_multiple() == 0, in, ": ", W, "x", H, " pixels",
          measured && f > 1 ? " (restored)" : "", "; this model takes sizes that are multiples of ", model.size_multiple());
  } else {
    check(H == native[1] && W == native[2], in, ": ", measured && f > 1 ? "restores to " : "", W, "x", H,
          " pixels, the model takes ", native[2], "x", native[1]);
  }
  const std::vector<int64_t> shape{C, H, W};

  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(a.integer("seed")));
  OperatorPtr op;
  torch::Tensor x, y;  // the clean image (clean mode), the measurement
  if (!measured) {
    x = pic;
    op = make_task_operator(task, shape, gen);
    y = op->measure(x, sigma_y, gen);
  } else if (inpaint) {
    torch::Tensor hole = image_to_tensor(read_png(a.str("mask")), 0, 1).mean(0, true);  // [1, h, w], 1 = missing
    check(hole.size(1) == H && hole.size(2) == W, a.str("mask"), ": the mask is ", hole.size(2), "x", hole.size(1),
          ", the image ", W, "x", H);
    op = make_mask(shape, (hole[0] < 0.5).to(torch::kFloat64), "mask");
    y = op->A(pic.to(torch::kFloat64)).to(torch::kFloat32);
  } else {
    op = make_task_operator(task, shape, gen);
    y = pic;
    op->check_y(y);
  }
  Cond cond;
  if (a.has("class")) cond.labels = class_labels(model, a.str("class"), 1);
  if (model.text()) cond = model.prompt_condition(a.str("prompt"), a.str("negative-prompt"), 1, H, W);
  check(cfg == 1.0 || model.text() || cond.labels.defined(), "tweedie restore: --cfg needs --class or a text model");
  DenoiserPtr denoiser = cfg == 1.0 ? model.denoiser : std::make_shared<CFGDenoiser>(model.denoiser, cfg);
  Measurement m{op, y, sigma_y};
  std::vector<int64_t> start_shape{1, C, H, W};
  if (model.text()) {
    auto& sd = *model.sd;
    const double scale = sd.checkpoint().vae_config.scaling_factor;
    const int64_t d = sd.downscale();
    start_shape = {1, sd.latent_channels(), H / d, W / d};
    if (solver.masks_only) {  // blended latent inpainting: the mask and the measurement in latent space
      check(op->is_mask(), solver.name, " works on inpainting masks only, not on '", op->name(), "'");
      torch::NoGradGuard ng;
      auto seen = op->A(torch::ones({1, C, H, W}, torch::kFloat64)).amin(1, true);           // 1 = observed pixel
      auto seen_lat = -torch::max_pool2d(-seen, {d, d});                                    // a latent whose patch is all seen
      auto y_lat = model.encode(op->At(y.to(torch::kFloat64)).to(torch::kFloat32));
      auto keep = seen_lat[0][0].contiguous();  // [h, w], 1 = kept
      m = Measurement{make_mask({start_shape[1], start_shape[2], start_shape[3]}, keep, "latent mask"),
                      y_lat * keep.to(y_lat.dtype()), 0};
    } else {  // the operator acts on the decoded pixels, autograd through the VAE
      AutoencoderKL vae = sd.vae();
      const auto vdt = vae->parameters().front().scalar_type();
      m.decode = [vae, scale, vdt](const torch::Tensor& z) mutable {
        return vae->decode((z / scale).to(vdt)).to(torch::kFloat32);
      };
      m.encode = [vae, scale, vdt](const torch::Tensor& px) mutable {
        return vae->encode(px.to(vdt)).to(torch::kFloat32) * scale;
      };
    }
  }
  const Process& proc = model.denoiser->process();
  std::vector<double> sigmas = make_schedule(a.str("schedule"), proc, steps);

  torch::NoGradGuard no_grad;
  SamplerRun run(*denoiser, sigmas, cond, {}, gen);
  Progress prog(solver.name, std::max(1, restore_nfe(solver, steps, ro)), !a.has("quiet") && !solver.baseline);
  run.callback = [&](const StepInfo&) { prog.update(run.nfe); };
  torch::Tensor x_start = at::randn(start_shape, gen, torch::TensorOptions().dtype(torch::kFloat32)) * sigmas[0];
  torch::Tensor restored = run_restore(solver, run, m, x_start, ro);
  prog.finish();
  check(torch::isfinite(restored).all().item<bool>(), "restoration produced non-finite values");
  if (model.text()) restored = model.decode(restored);
  const torch::Tensor pinv_y = op->pinv(y.to(torch::kFloat64)).to(torch::kFloat32);
  write_png(out_y, tensor_to_image((op->out_shape().size() == 3 ? y : pinv_y)[0].clamp(-1, 1)));
  Image res = tensor_to_image(restored[0].clamp(-1, 1));
  res.text["parameters"] = (model.text() ? a.str("prompt") + "\n" : std::string()) + "restore --task " + task +
                           " --solver " + solver.name + " --sigma-y " + a.str("sigma-y") + " --steps " +
                           std::to_string(steps) + " --seed " + a.str("seed");
  write_png(out, res);
  // How well the restoration meets the measurement (RMS per measured value).
  const double fit = (op->A(restored.to(torch::kFloat64)) - y.to(torch::kFloat64)).pow(2).mean().sqrt().item<double>();
  if (measured) {
    std::printf("%s, %s, sigma_y %g, %d steps (%d NFE): restored to %ldx%ld; measurement residual (RMS) %.4f\n",
                op->name().c_str(), solver.name.c_str(), sigma_y, steps, run.nfe, (long)W, (long)H, fit);
  } else {
    const double p_pinv = psnr(unit(pinv_y), unit(x)).item<double>(), p_out = psnr(unit(restored), unit(x)).item<double>();
    const double s_out = ssim(unit(restored), unit(x)).item<double>();
    std::printf("%s, %s, sigma_y %g, %d steps (%d NFE): PSNR A^+y %.2f dB, restored %.2f dB, SSIM %.4f; measurement "
                "residual (RMS) %.4f\n",
                op->name().c_str(), solver.name.c_str(), sigma_y, steps, run.nfe, p_pinv, p_out, s_out, fit);
  }
  if (!a.has("quiet")) std::fprintf(stderr, "wrote %s and %s\n", out.c_str(), out_y.c_str());
  return 0;
}

CommandRegistrar reg({"restore", "restore a degraded image (inpainting, super-resolution, deblurring, denoising)", run});

}  // namespace
}  // namespace tweedie::cli
