// tweedie generate: Stable Diffusion text-to-image, image-to-image and
// inpainting with a checkpoint the user brings (pipelines/stable_diffusion.h).
// PNGs carry AUTOMATIC1111's "parameters" tEXt chunk.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cli.h"
#include "guidance_args.h"
#include "model_spec.h"
#include "sampling_args.h"
#include "tweedie/core/error.h"
#include "tweedie/io/image.h"
#include "tweedie/io/plot.h"
#include "tweedie/io/resize.h"
#include "tweedie/pipelines/stable_diffusion.h"
#include "tweedie/train/dataset.h"

namespace tweedie::cli {
namespace {

// An image file as [1, C, H, W] in [lo, hi] with C = 3 (RGB) or 1 (gray: masks).
torch::Tensor load_picture(const std::string& path, int channels, double lo, double hi, const char* what) {
  Image img = read_image(path);
  auto t = image_to_tensor(img, lo, hi);  // [c, H, W]
  if (channels == 3 && t.size(0) == 1) t = t.expand({3, -1, -1});
  if (t.size(0) == 4) t = t.slice(0, 0, 3);  // drop alpha
  if (channels == 1 && t.size(0) == 3) t = t.mean(0, true);
  check(t.size(0) == channels, path, ": ", what, " must have ", channels, " channel(s), has ", t.size(0));
  return t.unsqueeze(0).contiguous();
}

std::string numbered(const std::string& out, int64_t i, int64_t total) {
  if (total == 1) return out;
  std::filesystem::path p(out);
  return (p.parent_path() / (p.stem().string() + "_" + std::to_string(i) + p.extension().string())).string();
}

int run(int argc, char** argv) {
  auto opts = sampling_opts("dpmpp-2m", "karras", 20);
  std::vector<Args::Opt> own = {
      {"model", "m", false, "checkpoint: .safetensors / .ckpt (LDM single file) or a diffusers folder (default: the "
                           "shipped FashionCanvas model, models/fashion_canvas.safetensors)", ""},
      {"prompt", "p", false, "prompt (A1111 emphasis: (word:1.2), [word], BREAK); repeat for several prompts, "
                            "sampled together (--batch-size images each)", ""},
      {"grid", "", true, "write one labelled grid PNG: a row per prompt, --batch-size columns", ""},
      {"negative-prompt", "", false, "negative prompt", ""},
      {"cfg", "", false, "classifier-free guidance scale", "7"},
      {"width", "W", false, "image width in pixels (default: the model's native size)", ""},
      {"height", "H", false, "image height in pixels (default: the model's native size)", ""},
      {"seed", "", false, "random seed (image i of the run uses seed + i for its batch)", "42"},
      {"batch-count", "b", false, "number of sampler runs (seed, seed+1, ...)", "1"},
      {"batch-size", "", false, "images per sampler run", "1"},
      {"output", "o", false, "output PNG (several images: NAME_i.png)", "output.png"},
      {"init", "i", false, "init image (PNG/JPEG) for img2img / inpainting", ""},
      {"strength", "", false, "img2img denoising strength in [0, 1] (1 = ignore the init image's content; not for "
                              "InstructPix2Pix models, whose --init is the image to edit)", "0.75"},
      {"resize-mode", "", false, "an --init / --mask of another size than -W x -H: stretch (A1111's Just resize), crop "
                                 "(Crop and resize) or fill (Resize and fill); Lanczos resampling", "stretch"},
      {"mask", "", false, "inpainting mask image: white = repaint, black = keep", ""},
      {"lora", "", false, "LoRA file:strength (repeatable), e.g. --lora style.safetensors:0.8", ""},
      {"lora-runtime", "", true, "add LoRA deltas to the loaded weights instead of merging them into the state dict first", ""},
      {"vae", "", false, "VAE file to use instead of the checkpoint's", ""},
      {"taesd", "", false, "TAESD file (taesd_decoder.pth / .safetensors): fast approximate decoding", ""},
      {"tiled-vae", "", true, "encode/decode in tiles (large images, bounded memory)", ""},
      {"clip-skip", "", false, "use the n-th last text encoder layer (1 = last; SD2/SDXL already skip 1)", "1"},
      {"tokenizer", "", false, "folder with vocab.json + merges.txt (single-file checkpoints; or $TWEEDIE_TOKENIZER)", ""},
      {"prediction", "", false, "eps or v (default: detected, see docs/stable-diffusion.md)", ""},
      {"config", "", false, "single files: the architecture as an LDM/SGM .yaml or a tweedie .json (default: the file's own)", ""},
      {"bf16", "", true, "run the networks in bfloat16 (AMX/AVX-512 fast path)", ""},
      {"quiet", "q", true, "no progress on stderr", ""},
  };
  opts.insert(opts.begin(), own.begin(), own.end());
  const auto rules = sd_guidance_opts();
  opts.insert(opts.end(), rules.begin(), rules.end());
  Args a("generate", "[-m MODEL] -p PROMPT [options]", opts);
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie generate: unexpected argument '", a.positional().empty() ? "" : a.positional()[0], "'");
  const std::string model = a.has("model") ? a.str("model") : default_text_model_path();
  check(a.has("model") || std::ifstream(model).good(), "tweedie generate: no --model given and the default model ", model,
        " is missing");
  const std::string out = a.str("output");
  check(out.size() > 4 && out.substr(out.size() - 4) == ".png", "tweedie generate: --output must end in .png");
  const int64_t count = a.integer("batch-count"), bs = a.integer("batch-size");
  check(count >= 1 && bs >= 1, "tweedie generate: --batch-count and --batch-size must be >= 1");

  SdPipelineOptions po;
  po.prediction = a.str("prediction");
  po.config = a.str("config");
  po.dtype = a.has("bf16") ? torch::kBFloat16 : torch::kFloat32;
  po.tokenizer = a.str("tokenizer");
  po.fallback_tokenizer = default_tokenizer_for(model);
  po.vae = a.str("vae");
  po.taesd = a.str("taesd");
  po.merge_loras = !a.has("lora-runtime");
  for (auto& spec : a.all("lora")) {
    auto colon = spec.rfind(':');
    double strength = 1.0;
    std::string file = spec;
    if (colon != std::string::npos && colon + 1 < spec.size() && spec.find_first_not_of("0123456789.-+eE", colon + 1) == std::string::npos) {
      file = spec.substr(0, colon);
      try {
        strength = std::stod(spec.substr(colon + 1));
      } catch (...) {
        fail("tweedie generate: --lora '", spec, "': strength is not a number");
      }
    }
    po.loras.emplace_back(file, strength);
  }
  const bool quiet = a.has("quiet");
  const double t0 = now();
  StableDiffusion sd(model, po);
  if (!quiet)
    std::fprintf(stderr, "loaded %s: %s (%.1f s)\n", model.c_str(), sd.checkpoint().describe().c_str(),
                 (now() - t0));

  SdRequest req;
  const std::vector<std::string> prompts = a.has("prompt") ? a.all("prompt") : std::vector<std::string>{""};
  req.prompt = prompts[0];
  if (prompts.size() > 1)
    for (auto& p : prompts) req.prompts.insert(req.prompts.end(), size_t(bs), p);  // prompt-major
  req.negative = a.str("negative-prompt");
  set_sd_sampling(a, req);
  req.cfg = a.number("cfg");
  req.guidance = sd_guidance_options(a, req.cfg);
  req.clip_skip = a.integer("clip-skip");
  check(req.clip_skip >= 1, "tweedie generate: --clip-skip must be >= 1");
  const int64_t native = sd.checkpoint().unet_config.height * sd.downscale();
  req.width = a.has("width") ? a.integer("width") : native;
  req.height = a.has("height") ? a.integer("height") : native;
  req.batch = bs * int64_t(prompts.size());
  req.tiled_vae = a.has("tiled-vae");
  req.strength = a.number("strength");
  check(req.strength >= 0 && req.strength <= 1, "tweedie generate: --strength must be in [0, 1], got ", req.strength);
  const std::string rm = a.str("resize-mode");
  check(rm == "stretch" || rm == "crop" || rm == "fill", "tweedie generate: --resize-mode must be stretch, crop or fill, "
        "got '", rm, "'");
  check(!a.has("resize-mode") || a.has("init"), "tweedie generate: --resize-mode applies to --init / --mask images");
  if (a.has("init")) {
    req.init = load_picture(a.str("init"), 3, -1, 1, "--init image");
    if (!a.has("width")) req.width = req.init.size(3);
    if (!a.has("height")) req.height = req.init.size(2);
    if (req.init.size(2) != req.height || req.init.size(3) != req.width)  // another size: A1111's resize modes
      req.init = resize_image(req.init, req.height, req.width, a.str("resize-mode")).clamp(-1, 1);
  }
  if (a.has("mask")) {
    check(a.has("init"), "tweedie generate: --mask needs --init");
    req.mask = load_picture(a.str("mask"), 1, 0, 1, "--mask");
    if (req.mask.size(2) != req.height || req.mask.size(3) != req.width)
      req.mask = resize_image(req.mask, req.height, req.width, a.str("resize-mode")).clamp(0, 1);
    if (!a.has("strength")) req.strength = 1.0;
  }
  const SdUNetConfig& uc = sd.checkpoint().unet_config;
  if (uc.in_channels == 2 * uc.out_channels)  // InstructPix2Pix: the init image is the condition, sampling starts from noise
    check(!a.has("strength"), "tweedie generate: --strength does not apply to InstructPix2Pix models (", model,
          "): the --init image is their condition and sampling starts from noise");
  else
    check(!a.has("image-cfg"), "tweedie generate: --image-cfg applies to InstructPix2Pix models only");
  const int seed_arg = a.integer("seed");
  check(seed_arg >= 0, "tweedie generate: --seed must be >= 0, got ", seed_arg);
  const uint64_t seed = uint64_t(seed_arg);
  const int64_t per_run = req.batch;
  std::vector<torch::Tensor> all;
  const double t_start = now();
  for (int64_t run = 0; run < count; ++run) {
    req.seed = seed + run;
    Progress prog("generate " + std::to_string(run + 1) + "/" + std::to_string(count), req.steps, !quiet);
    req.progress = [&](int done, int total) { prog.update(done); };
    torch::Tensor images = sd_generate(sd, req);
    prog.finish();
    if (a.has("grid")) {
      all.push_back(images);
      continue;
    }
    for (int64_t i = 0; i < images.size(0); ++i) {
      Image img = tensor_to_image(images[i]);
      SdRequest one = req;
      one.prompt = req.prompts.empty() ? req.prompt : req.prompts[size_t(i)];
      img.text["parameters"] = a1111_parameters(sd, one, req.seed);
      const std::string path = numbered(out, run * per_run + i, count * per_run);
      write_png(path, img);
      if (!quiet) std::fprintf(stderr, "wrote %s\n", path.c_str());
    }
  }
  if (a.has("grid")) {  // rows: prompts (each run's rows after the last's), columns: --batch-size images
    std::vector<torch::Tensor> rows;
    std::vector<std::string> labels;
    for (auto& images : all)
      for (size_t p = 0; p < prompts.size(); ++p) {
        rows.push_back(images.narrow(0, int64_t(p) * bs, bs));
        labels.push_back(prompts[p]);
      }
    const int scale = std::max<int>(1, int(128 / std::max<int64_t>(1, req.height)));
    write_png(out, labeled_grid(torch::cat(rows), int(bs), {}, labels, scale));
    if (!quiet)
      std::fprintf(stderr, "wrote %s: %zu prompts x %ld images in %.2f s\n", out.c_str(), prompts.size() * size_t(count),
                   (long)bs, now() - t_start);
  }
  return 0;
}

CommandRegistrar reg({"generate", "Stable Diffusion txt2img / img2img / inpainting with your SD1.x, SD2.x or SDXL checkpoint", run});

}  // namespace
}  // namespace tweedie::cli
