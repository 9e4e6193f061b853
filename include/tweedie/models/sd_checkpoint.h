// Stable Diffusion checkpoints as people have them -> flat state dicts in
// the layouts our modules load by name:
//   UNet  original LDM/SGM names (models/sd_unet.h): input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight
//   VAE   original LDM names (models/autoencoder_kl.h): encoder.down.0.block.0.norm1.weight
//   text  Hugging Face CLIP names (models/clip_text.h): text_model.encoder.layers.0.self_attn.q_proj.weight
//
// Sources:
//  - single files (.safetensors, .ckpt/.pt/.pth/.bin; io/state_dict.h), split
//    by prefix: model.diffusion_model.* (UNet), first_stage_model.* (VAE),
//    cond_stage_model.transformer.* (SD1 CLIP-L; "text_model." is added when
//    an old file lacks it), cond_stage_model.model.* (SD2 OpenCLIP-H),
//    conditioner.embedders.0.transformer.* + conditioner.embedders.1.model.*
//    (SDXL CLIP-L + OpenCLIP-bigG). OpenCLIP towers are converted with
//    openclip_to_hf. Other keys (EMA copies model_ema.*, schedule buffers
//    betas/alphas_cumprod/..., position_ids) are counted in `ignored_keys`,
//    unless use_ema, which takes the UNet from model_ema.* (LDM's EMA names
//    are the UNet names without dots).
//  - diffusers folders (model_index.json): unet/, vae/, text_encoder/,
//    text_encoder_2/ with diffusion_pytorch_model[.fp16].safetensors or .bin
//    (or model[.fp16].safetensors / pytorch_model[.fp16].bin; sharded
//    *.index.json too), config.json, tokenizer/ + tokenizer_2/ (paths
//    recorded), scheduler/scheduler_config.json. UNet and VAE names are
//    converted to LDM (diffusers_unet_to_ldm / diffusers_vae_to_ldm below).
//
// Family detection (from the UNet's keys and shapes):
//   sdxl  label_emb.0.0.weight [1280, 2816] (context 2048); the SDXL refiner
//         ([1536, 2560], context 1280) is rejected with a clear Error
//   sd2   cross-attention context 1024 (attn2.to_k.weight [C, 1024])
//   sd1   context 768
//   inpainting: input_blocks.0.0.weight has 9 input channels (any family);
//   other input widths (e.g. 8, InstructPix2Pix) are kept in in_channels.
// The UNet config (SdUNetConfig) is filled from the shapes: in/out channels,
// model_channels, channel_mult, num_res_blocks, attention levels and
// transformer depths, context_dim, linear projection, adm_in_channels; the
// head rule (not visible in weights) by family: sd1 8 heads, sd2/sdxl 64
// channels per head. VAE config likewise (ch, ch_mult, num_res_blocks,
// z_channels, embed_dim), scaling factor 0.18215 (sd1/sd2) or 0.13025
// (sdxl), or the diffusers vae/config.json "scaling_factor".
//
// Prediction type (eps vs v cannot be told from weights), first that applies:
//   1. SdLoadOptions::prediction ("eps" / "v"), the user's --prediction;
//   2. diffusers scheduler/scheduler_config.json "prediction_type";
//   3. a sibling <name>.yaml of a single file: "parameterization: v" -> v,
//      otherwise eps (LDM's default);
//   4. a "v_pred" key in the state dict (ComfyUI's marker) -> v;
//   5. an SD2 file whose name says "768-v", "v-pred" or "vpred" -> v;
//   6. eps (SD 1.x, SD2 512-base, SDXL). SD 2.x 768-v models are v: name
//      them, pass --prediction v, or keep their .yaml next to them.
// `prediction_source` says which rule decided.
//
// Anything else is an Error listing what was expected and what was found,
// e.g. "x.safetensors: not a Stable Diffusion checkpoint: expected keys
// model.diffusion_model.* (LDM) or a diffusers folder (model_index.json);
// found 12 keys like 'foo.weight', ...".
// Verified in tests/test_sd_checkpoint.cpp (SdCheckpoint*): diffusers <->
// LDM round trips for SD1-like, SDXL-like and VAE layouts (and the literal
// names of diffusers' conversion script), family detection, prediction
// rules, single-file and diffusers-folder loading, errors.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "tweedie/io/state_dict.h"
#include "tweedie/models/autoencoder_kl.h"
#include "tweedie/models/clip_text.h"
#include "tweedie/models/sd_unet.h"

namespace tweedie {

// The training noise schedule (diffusers scheduler_config.json names).
struct SdScheduleInfo {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.00085, beta_end = 0.012;
  std::string beta_schedule = "scaled_linear";
  std::string timestep_spacing;  // "" = not given ("leading", "trailing", "linspace")
  int64_t steps_offset = 0;
  bool rescale_betas_zero_snr = false;
};

struct SdTextEncoder {
  std::string name;         // "clip_l", "openclip_h", "openclip_bigg"
  StateDict weights;        // HF layout: text_model.*, text_projection.weight
  ClipTextConfig config;    // inferred from the shapes
  std::string tokenizer_dir;  // diffusers tokenizer/ or tokenizer_2/ ("" for single files)
};

struct SdCheckpoint {
  std::string source;             // the file or folder
  std::string family;             // "sd1", "sd2", "sdxl"
  bool inpainting = false;        // 9 input channels
  std::string prediction;         // "eps" | "v"
  std::string prediction_source;  // "option", "scheduler_config.json", "<name>.yaml", "v_pred key", "file name", "default"
  SdUNetConfig unet_config;
  AutoencoderKLConfig vae_config;  // scaling_factor included
  SdScheduleInfo schedule;
  StateDict unet, vae;                     // LDM names, no prefix
  std::vector<SdTextEncoder> text_encoders;  // sd1: clip_l; sd2: openclip_h; sdxl: clip_l, openclip_bigg
  size_t ignored_keys = 0;                 // keys of no component (EMA, schedule buffers, ...)

  // "sdxl (inpainting), eps (default), UNet 2567M params, ..." for logs.
  std::string describe() const;
};

struct SdLoadOptions {
  std::string prediction;                  // "" = detect; "eps" or "v" overrides
  std::optional<torch::ScalarType> dtype;  // convert floating weights once at load
  bool use_ema = false;                    // single LDM files: UNet from model_ema.*
};

// A file (single-file checkpoint) or a folder (diffusers).
SdCheckpoint load_sd_checkpoint(const std::string& path, const SdLoadOptions& opts = {});
// The single-file layout from an already loaded state dict (`name` is the
// file name used in errors and for the file-name rule).
SdCheckpoint sd_checkpoint_from_state_dict(const StateDict& sd, const std::string& name, const SdLoadOptions& opts = {});

// A separate VAE (a file such as vae-ft-mse-840000-ema-pruned.safetensors or
// sdxl_vae.safetensors, or a diffusers vae/ folder): LDM names (bare or under
// first_stage_model.) or diffusers names, returned in LDM names; `config`
// (optional) receives its shapes' config (scaling factor: the SD 1.x/2.x
// default; the caller keeps the checkpoint's, which depends on the family).
StateDict load_sd_vae(const std::string& path, const SdLoadOptions& opts = {}, AutoencoderKLConfig* config = nullptr);

// Family, inpainting and the UNet config from a UNet state dict in LDM
// names; fills those fields of ckpt. Error naming `where` otherwise.
void detect_sd_family(const StateDict& unet, const std::string& where, SdCheckpoint& ckpt);
AutoencoderKLConfig vae_config_from_weights(const StateDict& vae, const std::string& where);

// Key conversion between diffusers and LDM layouts (inverses of each other;
// tensors are shared except the VAE attention weights, reshaped between
// Linear [C, C] and 1x1 conv [C, C, 1, 1]). The level arithmetic is derived
// from the keys (resnets per down level, which up levels have attention),
// so SD1's 4 levels and SDXL's 3 both work. An unknown key is an Error
// naming it and `where`.
StateDict diffusers_unet_to_ldm(const StateDict& sd, const std::string& where);
StateDict ldm_unet_to_diffusers(const StateDict& sd, const std::string& where);
// (LDM name, diffusers name) for every key of an LDM UNet, in key order.
std::vector<std::pair<std::string, std::string>> ldm_unet_diffusers_names(const StateDict& sd, const std::string& where);
StateDict diffusers_vae_to_ldm(const StateDict& sd, const std::string& where);
StateDict ldm_vae_to_diffusers(const StateDict& sd, const std::string& where);

}  // namespace tweedie
