// ADM UNet (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image
// Synthesis"; guided-diffusion unet.py), built from the layers in nn/.
//
// conv_in -> per level l (resolution 1/2^l): num_res_blocks ResBlocks (+
// self-attention where 2^l is in attention_resolutions), then a downsample
// (not on the last level) -> middle ResBlock, attention, ResBlock -> per level
// from deepest: num_res_blocks + 1 ResBlocks, each taking one skip connection
// (concatenated), + attention, then an upsample (not on level 0) ->
// GroupNorm, SiLU, zero-initialized conv_out. Time embedding: sinusoidal (or
// Fourier) features of size model_channels -> MLP of width 4*model_channels,
// plus a learned class embedding (null class at index num_classes).
//
// JSON config (every key optional; config_json() writes them all):
//   in_channels (3), out_channels (= in_channels), image_size or height/width
//   (32), model_channels (128), channel_mult ([1,2,2,2]), num_res_blocks (2),
//   attention_resolutions ([2]): DOWNSAMPLING FACTORS 2^l of the levels with
//   attention (the LDM/SD convention; for a 28x28 input, [2] is 14x14),
//   num_heads (4), head_channels (0; > 0 sets heads = channels / head_channels),
//   dropout (0), num_classes (0 = unconditional), use_scale_shift_norm (true),
//   resblock_updown (false), conv_resample (true), norm_groups (32),
//   time_embedding ("sinusoidal" | "fourier"), time_scale (1; multiplies t).
// height and width must be divisible by 2^(levels - 1), and norm_groups must
// divide model_channels * m for every m in channel_mult.
//
// Module paths (state_dict keys and hook sites): time_embed.mlp.{0,2},
// label_emb.embedding_table, conv_in, down.<l>.res.<i>, down.<l>.attn.<i>,
// down.<l>.down, mid.res.{0,1}, mid.attn.0, up.<l>.res.<i>, up.<l>.attn.<i>,
// up.<l>.up (l = resolution level, 0 = full size, in both halves),
// norm_out, conv_out. Hook sites: "label_emb" [N, 4*model_channels] (the class
// embedding, before it is added), "temb" [N, 4*model_channels] (time + class),
// "skip.<i>" (the i-th skip connection in the order the encoder produced it,
// 0 = conv_in output, fired when the decoder concatenates it),
// "<resblock>.out", "<attn>.q/.k/.v/.probs/.out".
// Verified in tests/test_networks.cpp.
#pragma once
#include <string>
#include <vector>

#include "tweedie/models/network.h"

namespace tweedie {

struct UNetConfig {
  int64_t in_channels = 3, out_channels = 3, height = 32, width = 32;
  int64_t model_channels = 128;
  std::vector<int64_t> channel_mult{1, 2, 2, 2};
  int64_t num_res_blocks = 2;
  std::vector<int64_t> attention_resolutions{2};
  int64_t num_heads = 4, head_channels = 0;
  double dropout = 0.0;
  int64_t num_classes = 0;
  bool use_scale_shift_norm = true, resblock_updown = false, conv_resample = true;
  int64_t norm_groups = 32;
  std::string time_embedding = "sinusoidal";
  double time_scale = 1.0;

  // Parse and validate; Error "unet config: 'key' = value: why" on unknown
  // keys, wrong types and impossible values.
  static UNetConfig from_json(const std::string& text);
  std::string to_json() const;  // every key explicit; from_json(to_json()) round-trips
  void validate() const;
  int64_t heads_for(int64_t channels) const;
};

NetworkPtr make_unet(const UNetConfig& cfg);

}  // namespace tweedie
