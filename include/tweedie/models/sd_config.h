// Stable Diffusion architecture configs in the forms models come with, read
// into an SdCheckpoint whose sizes came from the weights (every size a
// config states is checked against them: an Error names the field, the
// config's value and the weights'), and written from one (models/sd_export.h).
//
//   tweedie JSON   {"family", "prediction", "unet": SdUNetConfig JSON,
//                   "vae": AutoencoderKLConfig JSON (scaling_factor included),
//                   "text_encoders": [{"name", "config": ClipTextConfig JSON,
//                   "layer", "final_norm", "pooled", "pad_token"}, ...],
//                   "schedule": {num_train_timesteps, beta_start, beta_end,
//                   beta_schedule, timestep_spacing, steps_offset,
//                   rescale_betas_zero_snr}, "size_embed_dim"}: every field
//                   explicit. Stored as the "tweedie.sd" safetensors metadata
//                   entry of tweedie's single files, or given as --config X.json.
//   LDM/SGM yaml   (io/yaml.h) model.params: parameterization,
//                   linear_start/linear_end, timesteps, beta_schedule
//                   ("linear" = diffusers' scaled_linear, "sqrt_linear" =
//                   linear, "cosine" = squaredcos_cap_v2), scale_factor;
//                   unet_config.params (LDM) or network_config.params (SGM):
//                   num_heads / num_head_channels, context_dim, depths, ...;
//                   first_stage_config.params (embed_dim, ddconfig);
//                   cond_stage_config (LDM: FrozenCLIPEmbedder layer
//                   last/hidden + layer_idx, FrozenOpenCLIPEmbedder layer
//                   last/penultimate, both with the final norm) or
//                   conditioner_config.params.emb_models (SGM:
//                   FrozenCLIPEmbedder as LDM, FrozenOpenCLIPEmbedder2 layer
//                   last/penultimate without the final norm unless legacy,
//                   ConcatTimestepEmbedderND outdim = size_embed_dim);
//                   SGM denoiser_config scaling_config VScaling -> v.
//   diffusers      unet/config.json (num_attention_heads, else
//                   attention_head_dim, per level; norm_num_groups;
//                   addition_time_embed_dim; the UNet2DConditionModel
//                   options tweedie's UNet does not have are Errors naming
//                   them), vae/config.json (scaling_factor, norm_num_groups),
//                   text_encoder*/config.json (num_attention_heads,
//                   hidden_act, layer_norm_eps), tokenizer*/ pad_token
//                   (special_tokens_map.json or tokenizer_config.json),
//                   scheduler/scheduler_config.json.
// Verified in tests/test_sd_checkpoint.cpp (SdConfig*): the same weights in
// the three forms load to the same checkpoint and give bit-identical
// outputs, for sd1/sd2/sdxl-structured models with non-released widths,
// heads and depths; contradictions and unsupported options are Errors.
#pragma once
#include <string>
#include <vector>

#include "tweedie/models/sd_checkpoint.h"

namespace tweedie {

// Read: each overrides what the config states and checks the rest.
void apply_tweedie_sd_config(SdCheckpoint& c, const std::string& json_text, const std::string& where);
void apply_ldm_yaml(SdCheckpoint& c, const std::string& yaml_text, const std::string& where);
void apply_diffusers_configs(SdCheckpoint& c, const std::string& dir);
// A --config file: .yaml/.yml -> apply_ldm_yaml, .json -> apply_tweedie_sd_config.
void apply_sd_config_file(SdCheckpoint& c, const std::string& path);

// Write.
std::string tweedie_sd_config(const SdCheckpoint& c);
std::string ldm_yaml(const SdCheckpoint& c);  // LDM for sd1/sd2, SGM for sdxl
struct DiffusersConfigs {
  std::string model_index, unet, vae, scheduler;
  std::vector<std::string> text_encoders;  // text_encoder/, text_encoder_2/ config.json
  std::vector<std::string> special_tokens;  // tokenizer/, tokenizer_2/ special_tokens_map.json
};
DiffusersConfigs diffusers_configs(const SdCheckpoint& c);

}  // namespace tweedie
