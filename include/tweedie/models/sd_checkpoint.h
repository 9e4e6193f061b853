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
// The architecture: the weights' shapes fix every size (levels, widths,
// depths, context width, vector conditioning, text towers); what shapes do
// not show (attention heads, norm groups, eps, activation, which text layer
// feeds the UNet, padding token, scaling factor, schedule, prediction) comes
// from the model's own config, first that exists (models/sd_config.h):
//   diffusers folders  unet/config.json, vae/config.json,
//                      text_encoder*/config.json, tokenizer*/ special tokens,
//                      scheduler/scheduler_config.json
//   single files       SdLoadOptions::config (an LDM/SGM inference .yaml such
//                      as v1-inference.yaml, v2-inference-v.yaml,
//                      sd_xl_base.yaml, or tweedie's JSON), else tweedie's
//                      "tweedie.sd" entry in the safetensors metadata, else a
//                      sibling <name>.yaml, else the family's preset rules.
// A config that contradicts the weights (another width, depth, ...) is an
// Error naming the field. `config_source` says which config decided.
//
// Family (a label for the rules above, told by structure, never by widths):
//   sdxl  two text towers (conditioner.embedders.0/1, or text_encoder_2/)
//         and vector conditioning (label_emb); the SDXL refiner (one tower,
//         y of pooled + 5 size embeddings) is rejected with a clear Error
//   sd2   one OpenCLIP tower (cond_stage_model.model.*; diffusers: a text
//         encoder with hidden_act "gelu")
//   sd1   one OpenAI CLIP tower (cond_stage_model.transformer.*; diffusers:
//         hidden_act "quick_gelu")
//   A bare UNet (detect_sd_family with no family set) falls back to its
//   context width: 768 sd1, 1024 sd2, label_emb sdxl.
//   inpainting: input_blocks.0.0.weight has 9 input channels (any family);
//   other input widths (e.g. 8, InstructPix2Pix) are kept in in_channels.
// Preset rules (bare single files): heads sd1 8, sd2/sdxl 64 channels per
// head; text layers sd1 the last + final norm, sd2 the penultimate + final
// norm, sdxl the penultimate of both without it (pooled from the second);
// a diffusers folder's text encoders are used as diffusers does: the last
// layer + final norm (its SD2 conversion already dropped the last block),
// SDXL hidden_states[-2]; scaling factor 0.18215 (sd1/sd2) or 0.13025 (sdxl).

// Prediction type (eps vs v cannot be told from weights), first that applies:
//   1. SdLoadOptions::prediction ("eps" / "v"), the user's --prediction;
//   2. diffusers scheduler/scheduler_config.json "prediction_type";
//   3. a single file's config (--config, tweedie.sd metadata, sibling
//      <name>.yaml): "parameterization: v" (LDM), VScaling (SGM) or the
//      JSON's "prediction"; an LDM yaml without one says eps (its default);
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
#include <map>
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
  std::string name;         // "clip_l", "openclip_h", "openclip_bigg" (the tower's kind and slot)
  StateDict weights;        // HF layout: text_model.*, text_projection.weight
  ClipTextConfig config;    // shapes from the weights, the rest from the model's config
  std::string tokenizer_dir;  // diffusers tokenizer/ or tokenizer_2/ ("" for single files)
  // How the pipeline uses it (decided from the model's form and config):
  int64_t layer = 0;         // hidden_states index (1..layers) fed to the UNet at clip skip 1
  bool final_norm = true;    // final_layer_norm applied to those hidden states
  bool pooled = false;       // its pooled projection goes into SDXL's vector y
  std::string pad_token = "<|endoftext|>";  // padding of the 77-token windows ("!" = id 0 for OpenCLIP)
  bool configured = false;   // a config gave its architecture (heads, activation, eps), not the preset rules
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
  int64_t size_embed_dim = 256;            // sdxl: Fourier features per size/crop value in y
  std::string config_source = "preset";    // "preset", "diffusers config.json", "<name>.yaml", "tweedie metadata", ...

  // "sdxl (inpainting), eps (default), UNet 2567M params, ..." for logs.
  std::string describe() const;
};

struct SdLoadOptions {
  std::string prediction;                  // "" = detect; "eps" or "v" overrides
  std::optional<torch::ScalarType> dtype;  // convert floating weights once at load
  bool use_ema = false;                    // single LDM files: UNet from model_ema.*
  std::string config;                      // single files: an LDM/SGM .yaml or a tweedie JSON config
                                           // ("" = the file's metadata, else a sibling <name>.yaml)
};

// A file (single-file checkpoint) or a folder (diffusers).
SdCheckpoint load_sd_checkpoint(const std::string& path, const SdLoadOptions& opts = {});
// The single-file layout from an already loaded state dict (`name` is the
// file name used in errors and for the file-name and sibling-yaml rules;
// `metadata` the file's safetensors metadata, for tweedie's "tweedie.sd").
SdCheckpoint sd_checkpoint_from_state_dict(const StateDict& sd, const std::string& name, const SdLoadOptions& opts = {},
                                          const std::map<std::string, std::string>* metadata = nullptr);

// A separate VAE (a file such as vae-ft-mse-840000-ema-pruned.safetensors or
// sdxl_vae.safetensors, or a diffusers vae/ folder): LDM names (bare or under
// first_stage_model.) or diffusers names, returned in LDM names; `config`
// (optional) receives its shapes' config (scaling factor: the SD 1.x/2.x
// default; the caller keeps the checkpoint's, which depends on the family).
StateDict load_sd_vae(const std::string& path, const SdLoadOptions& opts = {}, AutoencoderKLConfig* config = nullptr);

// The UNet config from a UNet state dict in LDM names (the family's preset
// heads), inpainting, and the family when ckpt.family is empty (by the
// context width; callers that see the text towers set it first). Error
// naming `where` otherwise.
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
