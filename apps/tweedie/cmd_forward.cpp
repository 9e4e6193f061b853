// tweedie forward: one component of a Stable Diffusion checkpoint on .npy
// inputs, written as .npy, for checking tweedie's numbers against other
// implementations of the same checkpoint (diffusers, ComfyUI, sd.cpp).
//   unet        -i x.npy [N, C, h, w] --timestep T --context c.npy [N or 1, L, D]
//               (SDXL: --y y.npy [N, 2816]; inpainting UNets: x holds all 9 channels)
//               -> the raw network output (eps or v, as the model predicts)
//   text        -p PROMPT -> the context [1, 77k, D] the UNet sees (A1111 emphasis
//               and chunking applied); --pooled FILE writes SDXL's pooled embedding
//   vae-encode  -i images.npy [N, 3, H, W] in [-1, 1] -> raw posterior mean latents
//               (diffusers' latent_dist.mean; not multiplied by the scaling factor)
//   vae-decode  -i latents.npy (raw) -> images [N, 3, H, W] (unclamped)
#include <cstdio>

#include "cli.h"
#include "tweedie/core/error.h"
#include "tweedie/io/npy.h"
#include "tweedie/pipelines/stable_diffusion.h"

namespace tweedie::cli {
namespace {

torch::Tensor finite_input(const std::string& path, int64_t dims, const char* what) {
  auto t = load_npy(path).to(torch::kFloat32);
  check(t.dim() == dims, path, ": ", what, " must have ", dims, " dimensions, has shape ", t.sizes());
  check(torch::isfinite(t).all().item<bool>(), path, ": contains NaN or infinity");
  return t;
}

int run(int argc, char** argv) {
  Args a("forward", "-m MODEL --component unet|text|vae-encode|vae-decode -o OUT.npy [inputs]",
         {{"model", "m", false, "checkpoint file or diffusers folder", ""},
          {"component", "", false, "unet, text, vae-encode or vae-decode", ""},
          {"input", "i", false, "input .npy (unet: x; vae-encode: images; vae-decode: latents)", ""},
          {"timestep", "t", false, "unet: the discrete timestep (0..999)", ""},
          {"context", "", false, "unet: text context .npy [N or 1, L, D]", ""},
          {"y", "", false, "unet (SDXL): vector conditioning .npy [N, 2816]", ""},
          {"prompt", "p", false, "text: the prompt", ""},
          {"clip-skip", "", false, "text: n-th last layer (1 = the family's default)", "1"},
          {"pooled", "", false, "text (SDXL): also write the pooled embedding to this .npy", ""},
          {"tokenizer", "", false, "folder with vocab.json + merges.txt (single-file checkpoints)", ""},
          {"config", "", false, "single files: the architecture as an LDM/SGM .yaml or a tweedie .json", ""},
          {"bf16", "", true, "run in bfloat16", ""},
          {"output", "o", false, "output .npy", ""}});
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie forward: unexpected argument '", a.positional().empty() ? "" : a.positional()[0], "'");
  check(a.has("model") && a.has("component") && a.has("output"), "tweedie forward: --model, --component and --output are required");
  const std::string comp = a.str("component"), out = a.str("output");
  check(comp == "unet" || comp == "text" || comp == "vae-encode" || comp == "vae-decode",
        "tweedie forward: --component must be unet, text, vae-encode or vae-decode (got '", comp, "')");
  check(out.size() > 4 && out.substr(out.size() - 4) == ".npy", "tweedie forward: --output must end in .npy");
  SdPipelineOptions po;
  po.tokenizer = a.str("tokenizer");
  po.config = a.str("config");
  po.dtype = a.has("bf16") ? torch::kBFloat16 : torch::kFloat32;
  StableDiffusion sd(a.str("model"), po);
  torch::NoGradGuard ng;
  torch::Tensor result;
  if (comp == "text") {
    check(a.has("prompt"), "tweedie forward: --component text needs --prompt");
    Cond c = sd.encode_prompt(a.str("prompt"), 1, 1024, 1024, a.integer("clip-skip"));
    result = c.context;
    if (a.has("pooled")) {
      check(sd.family() == "sdxl", "tweedie forward: --pooled is for SDXL (", sd.family(), " has no pooled embedding)");
      save_npy(a.str("pooled"), c.extra.at("y").slice(1, 0, 1280));
    }
  } else {
    check(a.has("input"), "tweedie forward: --component ", comp, " needs --input");
    auto x = finite_input(a.str("input"), 4, "the input");
    if (comp == "unet") {
      check(a.has("timestep") && a.has("context"), "tweedie forward: --component unet needs --timestep and --context");
      const auto& uc = sd.checkpoint().unet_config;
      check(x.size(1) == uc.in_channels, a.str("input"), ": the UNet takes ", uc.in_channels, " channels, x has ", x.size(1));
      Cond c;
      c.context = finite_input(a.str("context"), 3, "the context");
      check(c.context.size(2) == uc.context_dim, a.str("context"), ": the UNet's context width is ", uc.context_dim,
            ", the file has ", c.context.size(2));
      if (uc.adm_in_channels > 0) {
        check(a.has("y"), "tweedie forward: this UNet (", sd.family(), ") needs --y [N, ", uc.adm_in_channels, "]");
        c.extra["y"] = finite_input(a.str("y"), 2, "y");
      }
      auto dtype = a.has("bf16") ? torch::kBFloat16 : torch::kFloat32;
      auto t = torch::full({x.size(0)}, a.number("timestep"), torch::kFloat32);
      if (c.extra.count("y")) c.extra["y"] = c.extra["y"].to(dtype);
      c.context = c.context.to(dtype);
      result = sd.denoiser()->network().forward(x.to(dtype), t, c).to(torch::kFloat32);
    } else if (comp == "vae-encode") {
      check(x.size(1) == 3, a.str("input"), ": images must be [N, 3, H, W]");
      result = sd.encode_images(x) / sd.checkpoint().vae_config.scaling_factor;
    } else {
      result = sd.decode_latents(x * sd.checkpoint().vae_config.scaling_factor, false, false);
    }
  }
  save_npy(out, result.to(torch::kFloat32));
  std::fprintf(stderr, "wrote %s %s\n", out.c_str(), c10::str(result.sizes()).c_str());
  return 0;
}

CommandRegistrar reg({"forward", "one SD component (unet, text, vae-encode, vae-decode) on .npy inputs, for parity checks", run});

}  // namespace
}  // namespace tweedie::cli
