// tweedie sample: draw samples from a model with any sampler and schedule.
// Models: a tweedie model file (default: the shipped Fashion-MNIST model) or an
// exact Gaussian mixture (gmm:FILE.json).
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cli.h"
#include "guidance_args.h"
#include "model_spec.h"
#include "sampling_args.h"
#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/npy.h"
#include "tweedie/io/plot.h"
#include "tweedie/models/net_denoiser.h"
#include "tweedie/sample/generate.h"

namespace tweedie::cli {
namespace {

void write_scatter(const std::string& path, const torch::Tensor& x, const LoadedModel& model, const std::string& title) {
  check(x.dim() == 2 && x.size(1) == 2, path, ": scatter plots need a 2-D model (this one has shape ",
        c10::IntArrayRef(model.sample_shape), "); write .npy instead");
  auto c = x.to(torch::kFloat64).contiguous();
  Series s{"samples", {}, {}, true};
  for (int64_t i = 0; i < c.size(0); ++i) s.x.push_back(c[i][0].item<double>()), s.y.push_back(c[i][1].item<double>());
  PlotOptions po;
  po.title = title;
  po.equal_aspect = true;
  po.point_radius = 2;
  po.point_alpha = 0.5;
  po.width = po.height = 700;
  po.legend = false;
  write_png(path, plot({s}, po));
}

int run(int argc, char** argv) {
  auto opts = sampling_opts("deis", "karras", 20);
  auto gopts = guidance_opts();
  opts.insert(opts.end(), gopts.begin(), gopts.end());
  std::vector<Args::Opt> own = {
      {"model", "m", false, "model file (.safetensors) or gmm:FILE.json (default: the shipped Fashion-MNIST model)", ""},
      {"process", "", false, "process for analytic models: vp (default), vp:cosine, vp+ztsnr, vp-cont, ve, edm, flow", ""},
      {"prediction", "", false, "parameterization an analytic model reports in: x0 (default), eps, v, velocity, score, edm", ""},
      {"num", "n", false, "number of samples (image models: 16; mixtures: 1024)", ""},
      {"seed", "", false, "random seed", "0"},
      {"output", "o", false, "output: .npy (float32 [N, ...]), .png (image grid, or scatter plot for 2-D mixtures), "
                             "or DIR/ (one PNG per sample, NNNNN_cK.png)", ""},
      {"plot", "", false, "also write a scatter plot PNG here (2-D mixtures)", ""},
      {"init-noise", "", false, "start from this standard-normal .npy [N, ...]: x = sigma_max * noise", ""},
      {"class", "", false, "class name or index for conditional models; 'all' = one grid row per class", ""},
      {"cfg", "", false, "classifier-free guidance scale (needs --class)", "1"},
      {"bf16", "", true, "run the network in bfloat16 (image models)", ""},
      {"batch", "", false, "samples per sampler run, to bound memory (0 = all at once; stochastic samplers' output depends on it) (default: 256 for image models, all at once for mixtures)", ""},
      {"quiet", "q", true, "no progress on stderr", ""},
  };
  opts.insert(opts.begin(), own.begin(), own.end());
  Args a("sample", "[-m MODEL] [options] -o OUT.png|OUT.npy|DIR/", opts);
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie sample: unexpected argument '", a.positional().empty() ? "" : a.positional()[0], "'");
  check(a.has("output"), "tweedie sample: --output is required (.png, .npy or DIR/)");
  const std::string out = a.str("output");
  const bool to_dir = ends_with(out, "/") || is_directory(out);
  check(to_dir || ends_with(out, ".npy") || ends_with(out, ".png"), "tweedie sample: --output must end in .npy, .png or /, got '", out, "'");

  const SamplerInfo& sampler = find_sampler(a.str("sampler"));
  SamplerOptions sopt = sampler_options(a);
  ScheduleOptions schopt = schedule_options(a);
  std::string spec = a.str("model");
  if (spec.empty()) {
    spec = default_model_path();
    check(std::ifstream(spec).good(), "tweedie sample: no --model given and the default model ", spec,
          " is missing (train it with the command in models/README.md)");
  }
  LoadedModel model = load_model(spec, a.str("process"), a.str("prediction"));
  check(!to_dir || model.image, "tweedie sample: DIR/ output needs an image model");
  if (a.has("bf16")) {
    auto* nd = dynamic_cast<NetDenoiser*>(model.denoiser.get());
    check(nd != nullptr, "tweedie sample: --bf16 applies to network models only");
    nd->set_dtype(torch::kBFloat16);
  }
  const Process& proc = model.denoiser->process();
  const int steps = sampling_steps(a, sampler);
  std::vector<double> sigmas = make_schedule(a.str("schedule"), proc, steps, schopt);

  int n = a.has("num") ? a.integer("num") : (model.image ? 16 : 1024);
  check(n >= 1, "tweedie sample: -n must be >= 1 (got ", n, ")");
  Cond cond;
  DenoiserPtr den = model.denoiser;
  int cols = int(std::ceil(std::sqrt(double(n))));
  if (a.has("class")) {
    cond.labels = class_labels(model, a.str("class"), n);
    if (a.str("class") == "all") cols = int(cond.labels.size(0) / model.num_classes);
    n = int(cond.labels.size(0));
  }
  const double cfg = a.number("cfg");
  check(cfg == 1.0 || cond.labels.defined(), "tweedie sample: --cfg needs --class");
  const GuidanceOptions guidance =
      guidance_options(a, model, cfg, cond.labels.defined(), "--class", static_cast<uint64_t>(a.integer("seed")));
  den = make_guidance(den, guidance);

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
    check(noise.size(0) >= 1, a.str("init-noise"), ": holds no samples");
    check(!cond.labels.defined() || noise.size(0) == n, a.str("init-noise"), ": holds ", noise.size(0),
          " samples but --class asks for ", n);
    n = noise.size(0);
  } else {
    noise = at::randn(shape, gen, torch::kFloat32);
  }
  torch::NoGradGuard no_grad;
  GenerateOptions gopt;
  gopt.sampler = sopt;
  gopt.batch = a.has("batch") ? a.integer("batch") : (model.image ? 256 : 0);
  check(gopt.batch >= 0, "tweedie sample: --batch must be >= 0");
  Progress prog(sampler.name, int(chunks_of(n, gopt.batch) * steps), !a.has("quiet"));
  gopt.progress = [&](int64_t done, int64_t) { prog.update(int(done)); };
  Generated g = generate(*den, sampler, sigmas, noise, cond, gopt, gen);
  prog.finish();
  torch::Tensor x = g.x;
  check(torch::isfinite(x).all().item<bool>(), "sampling produced non-finite values");

  const std::string title = sampler.name + ", " + a.str("schedule") + ", " + std::to_string(steps) + " steps, " +
                            std::to_string(g.nfe) + " NFE";
  if (to_dir) {
    std::error_code ec;
    if (!is_directory(out)) std::filesystem::create_directories(out, ec);
    check(is_directory(out), "cannot create the directory '", out, "'", ec ? " (" + ec.message() + ")" : "");
    for (int64_t i = 0; i < n; ++i) {
      char name[64];
      std::snprintf(name, sizeof name, "%05ld_c%ld.png", (long)i,
                    (long)(cond.labels.defined() ? cond.labels[i].item<int64_t>() : -1));
      write_png(out + (ends_with(out, "/") ? "" : "/") + name, tensor_to_image(x[i].clamp(-1, 1)));
    }
  } else if (ends_with(out, ".npy")) {
    save_npy(out, x);
  } else if (model.image) {
    Image grid = make_grid(x.clamp(-1, 1), cols);
    grid.text["parameters"] = title + ", seed " + a.str("seed") + ", " + guidance.describe() +
                              (a.has("class") ? ", class " + a.str("class") : "");
    write_png(out, grid);
  } else {
    write_scatter(out, x, model, title);
  }
  if (a.has("plot")) write_scatter(a.str("plot"), x, model, title);
  std::fprintf(stderr, "wrote %s (%d samples, %d NFE, %s)\n", out.c_str(), n, g.nfe, model.description.c_str());
  return 0;
}

CommandRegistrar reg({"sample", "draw samples from a model with any sampler and schedule", run});

}  // namespace
}  // namespace tweedie::cli
