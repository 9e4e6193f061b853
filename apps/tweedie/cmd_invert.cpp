// tweedie invert: map data to a latent with an inversion method (DDIM with
// any invertible sampler, EDICT, fixed-point, null-text, negative-prompt,
// edit-friendly DDPM, CycleDiffusion; include/tweedie/edit/inversion.h),
// decode it back under the same condition and print the reconstruction error.
#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <fstream>

#include "cli.h"
#include "edit_common.h"
#include "model_spec.h"
#include "sampling_args.h"
#include "tweedie/core/error.h"
#include "tweedie/edit/inversion.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/io/npy.h"

namespace tweedie::cli {
namespace {

int run(int argc, char** argv) {
  std::string methods;
  for (auto& m : inversion_methods()) methods += (methods.empty() ? "" : "|") + m.name;
  auto opts = sampling_opts("ddim", "karras", 50);
  std::vector<Args::Opt> own = {
      {"model", "m", false, "model file (.safetensors), a Stable Diffusion checkpoint (file or diffusers folder) or "
                            "gmm:FILE.json (default: the shipped Fashion-MNIST model)", ""},
      {"process", "", false, "process for analytic models (default vp)", ""},
      {"prediction", "", false, "parameterization an analytic model reports in (default x0)", ""},
      {"method", "", false, "inversion method: " + methods, "ddim"},
      {"input", "i", false, "data to invert: .npy [N, ...], a .png, or a folder of PNGs", ""},
      {"test-images", "", false, "invert the first N Fashion-MNIST test images (of --class if given) instead of --input", ""},
      {"output", "o", false, "write the latent here, .npy [N, ...]: x(sigma_max) / sigma_max (for ddim, usable as --init-noise)", ""},
      {"class", "", false, "class name or index for conditional models", ""},
      {"prompt", "p", false, "text models: the prompt the data is inverted and reconstructed under", ""},
      {"negative-prompt", "", false, "text models: CFG's negative prompt (the null text null-text inversion starts from)", ""},
      {"reconstruction", "", false, "write the input and its reconstruction (a row each) to this PNG", ""},
      {"cfg", "", false, "guidance scale used during inversion and reconstruction", "1"},
      {"edict-p", "", false, "edict: mixing weight p in (0, 1]", "0.93"},
      {"tol", "", false, "fixed-point: RMS residual to stop at", "1e-6"},
      {"max-iter", "", false, "fixed-point: iterations per step at most", "50"},
      {"anderson", "", false, "fixed-point: Anderson history length (0 = plain fixed-point iteration)", "5"},
      {"inner-steps", "", false, "null-text: Adam steps per level at most", "10"},
      {"lr", "", false, "null-text: Adam learning rate", "0.1"},
      {"seed", "", false, "ddpm, cycle: random seed of their noise", "0"},
      {"quiet", "q", true, "no progress on stderr", ""},
  };
  opts.insert(opts.begin(), own.begin(), own.end());
  const auto text_opts = text_model_opts();
  opts.insert(opts.end(), text_opts.begin(), text_opts.end());
  Args a("invert", "[-m MODEL] -i DATA.npy|IN.png|DIR [--method M] [-o LATENT.npy] [options]", opts);
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie invert: unexpected argument '", a.positional().empty() ? "" : a.positional()[0], "'");
  check(a.has("input") != a.has("test-images"), "tweedie invert: give either --input or --test-images");
  check(!a.has("output") || ends_with(a.str("output"), ".npy"), "tweedie invert: --output must end in .npy");
  check(!a.has("reconstruction") || ends_with(a.str("reconstruction"), ".png"), "tweedie invert: --reconstruction "
        "must end in .png");
  const InversionMethodInfo& method = find_inversion_method(a.str("method"));
  for (auto [opt, applies] : std::vector<std::pair<const char*, const char*>>{{"edict-p", "edict"},
                                                                             {"tol", "fixed-point"},
                                                                             {"max-iter", "fixed-point"},
                                                                             {"anderson", "fixed-point"},
                                                                             {"inner-steps", "null-text"},
                                                                             {"lr", "null-text"},
                                                                             {"seed", "ddpm cycle"}})
    check(!a.has(opt) || (" " + std::string(applies) + " ").find(" " + method.name + " ") != std::string::npos,
          "tweedie invert: --", opt, " applies to --method ", applies, ", not ", method.name);
  const bool ddpm_like = method.name == "ddpm" || method.name == "cycle";
  InversionOptions io;
  io.sampler = a.str("sampler");
  const SamplerInfo& sampler = find_sampler(io.sampler);
  if (method.name == "ddim" || method.name == "negative-prompt") require_invertible(sampler);
  else check(!a.has("sampler"), "tweedie invert: --sampler applies to the ddim and negative-prompt methods, not ", method.name);
  io.sampler_options = sampler_options(a);
  if (ddpm_like) {
    io.eta = a.has("eta") ? a.number("eta") : 1.0;
    io.sampler_options.eta = -1;
  }
  io.cfg = a.number("cfg");
  io.edict_p = a.number("edict-p");
  io.tol = a.number("tol");
  io.max_iter = a.integer("max-iter");
  io.anderson = a.integer("anderson");
  io.inner_steps = a.integer("inner-steps");
  io.lr = a.number("lr");
  io.gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(a.integer("seed")));

  std::string spec = a.str("model");
  if (spec.empty()) {
    spec = default_model_path();
    check(std::ifstream(spec).good(), "tweedie invert: no --model given and the default model ", spec, " is missing");
  }
  LoadedModel model = load_model(spec, a.str("process"), a.str("prediction"), text_model_options(a));
  check(!model.text() || !a.has("class"), "tweedie invert: ", spec, " is a text model: give --prompt, not --class");
  check(model.text() || (!a.has("prompt") && !a.has("negative-prompt")), "tweedie invert: --prompt and "
        "--negative-prompt need a text model (", spec, " is not one)");
  check(!model.text() || !a.has("test-images"), "tweedie invert: --test-images are Fashion-MNIST images; a text model "
        "takes --input");
  if (model.text() && method.name == "null-text" && !a.has("lr")) io.lr = 0.01;  // the paper's rate for text embeddings
  const Process& proc = model.denoiser->process();
  std::vector<double> sigmas = make_schedule(a.str("schedule"), proc, sampling_steps(a, sampler), schedule_options(a));
  check(sigmas.size() >= 3, "tweedie invert: needs at least 2 steps");

  torch::Tensor x;
  if (a.has("test-images")) {
    const int64_t k = a.has("class") ? class_labels(model, a.str("class"), 1)[0].item<int64_t>() : -1;
    x = fashion_mnist_test_images(a.integer("test-images"), k, model, "tweedie invert").images;
  } else {
    x = load_input_images(a.str("input"), model, "tweedie invert");
  }
  const int64_t n = x.size(0);
  const torch::Tensor images = x;
  Cond cond;
  if (a.has("class")) cond.labels = class_labels(model, a.str("class"), n);
  if (model.text()) {
    cond = model.prompt_condition(a.str("prompt"), a.str("negative-prompt"), n, x.size(2), x.size(3));
    torch::NoGradGuard ng;
    x = model.encode(images);  // invert the latents
  }
  check(io.cfg == 1.0 || cond.labels.defined() || model.text(), "tweedie invert: --cfg needs --class");

  torch::NoGradGuard no_grad;  // null-text switches autograd on for its own optimization
  const double t0 = now();
  Progress inv_prog("invert " + method.name, int(sigmas.size()) - 2, !a.has("quiet"));
  io.progress = [&](int done, int) { inv_prog.update(done); };
  Inversion inv = invert(method.name, model.denoiser, sigmas, x, cond, io);
  inv_prog.finish();
  const double secs = now() - t0;
  check(torch::isfinite(inv.latent).all().item<bool>(), "inversion produced non-finite values");
  if (a.has("output")) save_npy(a.str("output"), (inv.latent / inv.sigmas.front()).to(torch::kFloat32));
  Progress rec_prog("reconstruct", inv.steps(), !a.has("quiet"));
  io.progress = [&](int done, int) { rec_prog.update(done); };
  auto rec = decode(model.denoiser, inv, cond, io);
  rec_prog.finish();
  const Difference d = difference(rec, x);
  const auto x64 = x.to(torch::kFloat64);
  const double mean_abs = (rec - x64).abs().mean().item<double>(), rel = ((rec - x64).norm() / x64.norm()).item<double>();
  std::printf("inverted %ld samples with %s%s, %d steps (%d NFE, %.1f s), cfg %g; reconstruction%s: RMSE %.3g, max abs "
              "%.3g, mean abs error %.3g, relative %.3g\n",
              (long)n, method.name.c_str(), method.name == "ddim" ? (" (" + sampler.name + ")").c_str() : "",
              inv.steps(), inv.nfe, secs, io.cfg, model.text() ? " of the latents" : "", d.rmse, d.max_abs, mean_abs, rel);
  torch::Tensor rec_images = rec;
  if (model.text()) {
    rec_images = model.decode(rec);
    const Difference di = difference(rec_images, images), vae = difference(model.decode(x), images);
    std::printf("images (through the VAE): RMSE %.3g, max abs %.3g; the VAE's own round trip: RMSE %.3g\n", di.rmse,
                di.max_abs, vae.rmse);
  }
  if (a.has("reconstruction")) {
    check(model.image && images.dim() == 4, "tweedie invert: --reconstruction needs an image model");
    Image grid = make_grid(torch::cat({images, rec_images.to(torch::kFloat32).clamp(-1, 1)}), int(n));
    grid.text["parameters"] = "invert --method " + method.name + " --cfg " + a.str("cfg");
    write_png(a.str("reconstruction"), grid);
  }
  if (!inv.iterations.empty()) {
    int total = 0, most = 0, open = 0;
    double worst = 0;
    for (size_t i = 0; i < inv.iterations.size(); ++i) {
      total += inv.iterations[i], most = std::max(most, inv.iterations[i]);
      worst = std::max(worst, inv.residuals[i]);
      open += inv.residuals[i] >= io.tol;
    }
    std::printf("fixed-point iterations: %d in all, at most %d per step; largest residual %.3g (%d of %zu steps above --tol)\n",
                total, most, worst, open, inv.iterations.size());
    // Where it did not converge: the step (sigma -> next sigma) and its residual.
    for (size_t i = 0; i < inv.iterations.size(); ++i)
      if (inv.residuals[i] >= io.tol)
        std::printf("  step sigma %.4g -> %.4g: residual %.3g after %d iterations\n", inv.sigmas[i], inv.sigmas[i + 1],
                    inv.residuals[i], inv.iterations[i]);
  }
  return 0;
}

CommandRegistrar reg({"invert", "invert data to a latent (DDIM, EDICT, fixed-point, null-text, negative-prompt, DDPM); prints "
                                "the reconstruction error",
                      run});

}  // namespace
}  // namespace tweedie::cli
