// Stable Diffusion pipelines: text-to-image, image-to-image (SDEdit) and
// inpainting over a loaded SD1.x / SD2.x / SDXL checkpoint. Thin glue: the
// checkpoint formats are models/sd_checkpoint.h, the networks
// models/sd_unet.h, autoencoder_kl.h, taesd.h and clip_text.h, sampling is
// any registered sampler + schedule, guidance is CFGDenoiser with the
// negative prompt as its negative condition (guide/cfg.h).
//
//   latents    the UNet's space: scaling_factor * the VAE's raw latents; the
//              noise process is the checkpoint's training table (SD's
//              scaled_linear 0.00085..0.012 over 1000 steps unless the
//              diffusers scheduler config says otherwise, + zero-terminal-SNR
//              rescale when it asks), eps- or v-prediction as detected.
//   text       TextEncoderSet: 77-token windows, A1111 emphasis "(word:1.2)",
//              prompts over 75 tokens in chunks; the positive and negative
//              contexts are padded to the same number of windows with
//              windows of the empty prompt (as A1111 does).
//   SDXL       y = [pooled text embedding, Fourier embeddings of the original
//              size, crop (0, 0) and target size] (sdxl_vector_cond).
//   img2img    SDEdit (edit/sdedit.h): the init image's latents noised to the
//              level `strength` of the way up the schedule, then the
//              remaining steps.
//   inpaint    9-channel UNets natively (c_concat = [mask, latents of the
//              image with the masked region zeroed], LDM's order); other
//              UNets by blending in x0: outside the mask every prediction's
//              x0 is replaced by the init image's latents, so the last step
//              lands exactly on them there.
//
// Verified in tests/test_sd_pipeline.cpp on tiny random checkpoints written
// in the LDM single-file and diffusers layouts: both layouts give identical
// images; txt2img, img2img (strength 0 returns the init latents), inpaint
// (unmasked latents kept exactly with blending; 9-channel path runs),
// LoRA merged = LoRA at run time, bf16 vs fp32, seeds reproduce.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "tweedie/guide/attention_loss.h"
#include "tweedie/guide/guidance.h"
#include "tweedie/models/autoencoder_kl.h"
#include "tweedie/models/clip_text.h"
#include "tweedie/models/net_denoiser.h"
#include "tweedie/models/sd_checkpoint.h"
#include "tweedie/models/taesd.h"
#include "tweedie/process/schedule.h"
#include "tweedie/sample/sampler.h"

namespace tweedie {

struct SdPipelineOptions {
  std::string prediction;                      // "" = detect (sd_checkpoint.h); "eps" | "v"
  torch::ScalarType dtype = torch::kFloat32;   // compute dtype: float32 or bfloat16 (weights cast once)
  std::string tokenizer;                       // folder with vocab.json + merges.txt ("" = the model's own,
                                               // else $TWEEDIE_TOKENIZER, else fallback_tokenizer)
  std::string fallback_tokenizer;
  std::string vae;                             // a VAE file to use instead of the checkpoint's
  std::string taesd;                           // a TAESD file: decode (and encode) with it instead
  std::vector<std::pair<std::string, double>> loras;  // file, strength
  bool merge_loras = true;                     // false: keep the base weights and add the LoRA deltas
                                               // at run time (the same numbers; unmerge restores them)
  bool use_ema = false;
  std::string config;                          // single files: an LDM/SGM .yaml or tweedie .json architecture
                                               // ("" = the file's metadata, else a sibling .yaml; sd_checkpoint.h)
};

class StableDiffusion {
 public:
  StableDiffusion(const std::string& path, const SdPipelineOptions& opt = {});

  const SdCheckpoint& checkpoint() const { return ckpt_; }
  std::string family() const { return ckpt_.family; }
  int64_t latent_channels() const;
  int64_t downscale() const;  // image pixels per latent pixel (8 for SD)
  std::shared_ptr<NetDenoiser> denoiser() const { return denoiser_; }
  const Process& process() const { return denoiser_->process(); }

  // Text conditioning of a batch of `n` (context [n, 77k, D], SDXL y).
  // clip_skip 0 = the family's default.
  Cond encode_prompt(const std::string& prompt, int64_t n, int64_t width, int64_t height, int64_t clip_skip = 0) const;
  // The prompt's condition for a batch of n carrying the negative prompt as
  // its unconditional counterpart (extra "null_context" and, SDXL, "null_y":
  // Cond::null_like), so every rule that guides with null_like (CFG in
  // inversion, editing, restoration) uses the negative prompt.
  Cond condition(const std::string& prompt, const std::string& negative, int64_t n, int64_t width, int64_t height,
                 int64_t clip_skip = 0) const;
  // Several prompts' conditions (an edit's source and target) padded to one
  // context length and sharing one unconditional counterpart, so they
  // batch together (Cond::concat).
  std::vector<Cond> conditions(const std::vector<std::string>& prompts, const std::string& negative, int64_t n,
                               int64_t width, int64_t height, int64_t clip_skip = 0) const;
  // The prompt's words and the positions of their tokens in the context
  // (prompt_word_positions with the model's tokenizer), for attention hooks.
  std::vector<PromptWord> word_positions(const std::string& prompt) const;
  // Positive and negative conditions padded to the same context length.
  std::pair<Cond, Cond> encode_prompts(const std::string& prompt, const std::string& negative, int64_t n,
                                       int64_t width, int64_t height, int64_t clip_skip = 0) const;

  // Images [N, 3, H, W] in [-1, 1] <-> model latents (scaled).
  torch::Tensor encode_images(const torch::Tensor& images, bool tiled = false) const;
  torch::Tensor decode_latents(const torch::Tensor& latents, bool tiled = false, bool clamp = true) const;

  // The autoencoder (raw latents; encode_images/decode_latents apply the scaling).
  AutoencoderKL vae() const { return vae_; }

  // LoRA deltas added at run time (merge_loras = false): remove them again.
  void unmerge_loras();

 private:
  SdCheckpoint ckpt_;
  SdPipelineOptions opt_;
  std::shared_ptr<NetDenoiser> denoiser_;
  mutable AutoencoderKL vae_{nullptr};  // modules run in const methods
  mutable Taesd taesd_{nullptr};
  bool taesd_encoder_ = false;  // the TAESD file had an encoder (else the VAE encodes)
  std::unique_ptr<TextEncoderSet> text_;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> runtime_lora_;  // (parameter, delta added)
};

struct SdRequest {
  std::string prompt, negative;
  // One prompt per image instead (a grid, an evaluation set): batch must be
  // prompts.size(); all share the negative prompt and the CFG null.
  std::vector<std::string> prompts;
  int64_t width = 512, height = 512;  // pixels, multiples of the pipeline's downscale * 2^(levels-1)
  int steps = 20;
  std::string sampler = "dpmpp-2m", schedule = "karras";
  SamplerOptions sampler_options;
  ScheduleOptions schedule_options;
  double cfg = 7.0;
  // The other guidance rules (guidance.h), composed with CFG in make_guidance's
  // order: CFG-rescale, interval, scale schedule, PAG, SAG, ... Its cfg field
  // is ignored (cfg above rules) and CFG's negative is the negative prompt.
  GuidanceOptions guidance;
  int64_t clip_skip = 0;
  uint64_t seed = 42;
  int64_t batch = 1;            // images per sampler run
  torch::Tensor init;           // img2img / inpaint: [1 or batch, 3, H, W] in [-1, 1]
  double strength = 0.75;       // img2img: fraction of the schedule re-done (1 = from pure noise)
  torch::Tensor mask;           // inpaint: [1, 1, H, W] in [0, 1], 1 = repaint
  bool tiled_vae = false;
  std::function<void(int step, int steps)> progress;
  // A change of the state before the first steps (attention_loss.h), after
  // those of --attend-excite / --layout: e.g. attention guidance on tokens
  // picked by position rather than by word.
  StateUpdate update;
};

// Generate `req.batch` images [batch, 3, H, W] in [-1, 1]; Error naming the
// field for impossible requests (size not divisible, strength outside
// [0, 1], mask without an image, ...).
torch::Tensor sd_generate(StableDiffusion& sd, const SdRequest& req);
// The same up to the final latents [batch, C, H/8, W/8] (model scale), before decoding.
torch::Tensor sd_generate_latents(StableDiffusion& sd, const SdRequest& req);

// "prompt\nNegative prompt: ...\nSteps: 20, Sampler: ..., CFG scale: 7, Seed: 42, Size: 512x512, ..."
// (AUTOMATIC1111's "parameters" text).
std::string a1111_parameters(const StableDiffusion& sd, const SdRequest& req, uint64_t seed);

}  // namespace tweedie
