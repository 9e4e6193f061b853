// The Stable Diffusion UNet (Rombach et al. 2022, latent diffusion; CompVis
// ldm/modules/diffusionmodules/openaimodel.py UNetModel, and Podell et al.
// 2023, SDXL, Stability-AI sgm/modules/diffusionmodules/openaimodel.py), with
// the ORIGINAL LDM/SGM parameter names, so a checkpoint's
// "model.diffusion_model.*" tensors load by name (arch "sd_unet").
//
// Structure (LDM): time_embed.{0,2} (Linear-SiLU-Linear on the 320-wide
// sinusoidal embedding [cos, sin] of the timestep, width 4*model_channels);
// label_emb.0.{0,2} (SDXL: the same MLP on the vector y, adm_in_channels
// wide); input_blocks.0.0 = conv_in; then per level l with multiplier m:
// num_res_blocks blocks input_blocks.k = [ResBlock (k.0), SpatialTransformer
// (k.1) if 2^l is in attention_resolutions], then a Downsample block
// input_blocks.k.0.op (not on the last level); middle_block.{0: ResBlock,
// 1: SpatialTransformer, 2: ResBlock}; output_blocks from the deepest level,
// num_res_blocks + 1 per level, each [ResBlock on concat(h, skip), optional
// SpatialTransformer, Upsample ".conv" on the last block of a level > 0
// (index 1 or 2)]; out.0 (GroupNorm), out.2 (conv). ResBlocks use
// in_layers/emb_layers/out_layers/skip_connection (nn/resblock.h, ldm_names)
// without scale-shift; transformers are nn/spatial_transformer.h.
//
// JSON config ("preset" picks the defaults, every other key overrides them;
// config_json() writes every key explicit and no preset):
//   preset: "sd1" (default) | "sd2" | "sdxl"
//   in_channels (4; 9 for inpainting), out_channels (4), height/width or
//   image_size: the latent size of sample_shape() (64; sdxl 128) - forward
//   accepts any size divisible by 2^(levels-1),
//   model_channels (320), channel_mult ([1,2,4,4]; sdxl [1,2,4]),
//   num_res_blocks (2), attention_resolutions ([4,2,1]; sdxl [4,2]) as
//   downsampling factors 2^l, transformer_depth (one per level: [1,1,1,1];
//   sdxl [1,2,10]) and transformer_depth_middle (-1 = the last level's),
//   num_heads (8) or num_head_channels (-1; sd2/sdxl 64: heads = C / 64),
//   level_heads ([]: heads per level, overriding both; diffusers' lists),
//   context_dim (768; sd2 1024; sdxl 2048), use_linear_in_transformer
//   (false; sd2/sdxl true), adm_in_channels (0; sdxl 2816), norm_groups (32).
// Presets reproduce the released models: sd1 = SD 1.x (859,520,964
// parameters), sd2 = SD 2.x (865,910,724), sdxl = SDXL base (2,567,463,684).
//
// Conditioning (Cond): context [N, L, context_dim] (the text encoder's
// hidden states; a batch of 1 is broadcast), extra["y"] [N, adm_in_channels]
// (SDXL, see sdxl_vector_cond), extra["c_concat"] [N, in_channels - C, H, W]
// concatenated to an input x of C < in_channels channels (inpainting: mask
// and masked-image latents, in LDM's order). t is the discrete timestep
// (0..999 for SD's VP process).
//
// Hook sites: "temb" [N, 4*model_channels] (time + label embedding),
// "label_emb" (the embedding of y, before it is added), "skip.<i>" (skip
// connection i in encoder order, 0 = conv_in output, fired when concatenated),
// "<block>.out" for every input_blocks.<k>, middle_block and output_blocks.<k>
// (the block's output), "output_blocks.<k>.in" (the backbone features
// entering output block k, before its skip is concatenated; FreeU),
// "<resblock>.out" (e.g. "input_blocks.1.0.out"), and
// the transformer sites of spatial_transformer.h at their module paths, e.g.
// "input_blocks.1.1.transformer_blocks.0.attn1.probs" (self) and
// "...attn2.probs" (cross-attention on the text tokens).
//
// Speed: the network runs in the dtype of its weights (cast once: net->to(kBFloat16));
// with bf16 weights activations are channels_last so convolutions take
// oneDNN's bf16 kernels, GroupNorm is computed with float32 statistics.
// Verified in tests/test_sd_unet.cpp (key sets of tiny SD1/SD2/SDXL/inpaint
// configs equal the LDM naming rules, shapes, hooks, bf16 vs fp32, SDXL
// vector conditioning, full-size parameter counts in a DISABLED_ test).
#pragma once
#include <string>
#include <vector>

#include <torch/types.h>

#include "tweedie/models/network.h"

namespace tweedie {

struct SdUNetConfig {
  int64_t in_channels = 4, out_channels = 4, height = 64, width = 64;
  int64_t model_channels = 320;
  std::vector<int64_t> channel_mult{1, 2, 4, 4};
  int64_t num_res_blocks = 2;
  std::vector<int64_t> attention_resolutions{4, 2, 1};
  std::vector<int64_t> transformer_depth{1, 1, 1, 1};
  int64_t transformer_depth_middle = -1;  // -1: transformer_depth.back()
  int64_t num_heads = 8, num_head_channels = -1;
  // Heads of each level's transformers (the middle block takes the last
  // level's), as diffusers' per-level num_attention_heads; empty = the rule
  // above. Overrides num_heads / num_head_channels when given.
  std::vector<int64_t> level_heads;
  int64_t context_dim = 768;
  bool use_linear_in_transformer = false;
  int64_t adm_in_channels = 0;  // > 0: SDXL's vector conditioning y
  int64_t norm_groups = 32;

  static SdUNetConfig preset(const std::string& name);  // "sd1", "sd2", "sdxl"
  // Parse and validate; Error "sd_unet config: 'key' = value: why".
  static SdUNetConfig from_json(const std::string& text);
  std::string to_json() const;  // every key explicit; from_json(to_json()) round-trips
  void validate() const;
  // (heads, dim_head) of a transformer on `channels` channels (LDM's rule).
  std::pair<int64_t, int64_t> heads_for(int64_t channels) const;
  // (heads, dim_head) of the transformers of a level (level_heads, else heads_for).
  std::pair<int64_t, int64_t> heads_at(int64_t level) const;
  int64_t depth_at(int64_t level) const;  // transformer blocks at a level, 0 = no attention
  int64_t middle_depth() const;
};

NetworkPtr make_sd_unet(const SdUNetConfig& cfg);

// SDXL's vector conditioning y [N, 2816] (sgm GeneralConditioner, in embedder
// order): the pooled text embedding [N, 1280] followed by the 256-wide
// sinusoidal embedding (timestep_embedding: [cos, sin], max period 10^4) of
// each of original height, width, crop top, crop left, target height, width
// (ConcatTimestepEmbedderND). Values are pixels of the image, not latents.
// `dim` is the width of each value's embedding (diffusers' addition_time_embed_dim).
torch::Tensor sdxl_vector_cond(const torch::Tensor& pooled, double orig_h, double orig_w, double crop_top,
                               double crop_left, double target_h, double target_w, int64_t dim = 256);

}  // namespace tweedie
