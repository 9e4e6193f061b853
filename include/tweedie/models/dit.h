// DiT (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers";
// facebookresearch/DiT models.py), optionally with U-ViT long skips (Bao et
// al. 2023, "All are Worth Words: A ViT Backbone for Diffusion Models").
//
// Patch embedding (conv p x p, stride p) + fixed 2-D sin-cos positional
// embedding -> depth adaLN-Zero blocks:
//   x += gate1 * Attn(LN(x) * (1 + scale1) + shift1)
//   x += gate2 * MLP(LN(x) * (1 + scale2) + shift2)
// with (shift, scale, gate) x 2 = Linear(SiLU(c)) zero-initialized, c = time
// embedding + class embedding (null class at index num_classes) -> final
// layer LN, adaLN, zero-initialized Linear -> unpatchify. At initialization
// the output is exactly zero. learn_sigma is off: out_channels channels.
// Condition dropout for classifier-free guidance is the trainer's job.
//
// long_skips (U-ViT): with n = (depth - 1) / 2, the outputs of blocks
// 0..n-1 are concatenated, in reverse order, to the inputs of the last n
// blocks through a Linear(2D, D) ("blocks.<i>.skip_linear"); the 1 or 2
// middle blocks have none (U-ViT's in/mid/out layout). Needs depth >= 3.
//
// JSON config (every key optional; config_json() writes them all):
//   in_channels (4), out_channels (= in_channels), image_size or height/width
//   (32), patch_size (2), hidden_size (384), depth (12), num_heads (6),
//   mlp_ratio (4), num_classes (0), long_skips (false),
//   time_embedding ("sinusoidal" | "fourier"), time_scale (1).
// height and width must be divisible by patch_size, hidden_size by num_heads
// and by 4 (2-D sin-cos embedding).
//
// State-dict names follow DiT: x_embedder.proj, t_embedder.mlp.{0,2},
// y_embedder.embedding_table, pos_embed (buffer), blocks.<i>.{attn.qkv,
// attn.proj, mlp.fc1, mlp.fc2, adaLN_modulation.1}, final_layer.{linear,
// adaLN_modulation.1}. Hook sites: "label_emb" (the class embedding, before it
// is added to the time embedding), "temb", "blocks.<i>.attn.q/.k/.v/.probs/.out"
// (out before the gate), "blocks.<i>.mlp.out" (the MLP branch before its gate),
// "blocks.<i>.out".
// Verified in tests/test_networks.cpp.
#pragma once
#include <string>

#include "tweedie/models/network.h"

namespace tweedie {

struct DiTConfig {
  int64_t in_channels = 4, out_channels = 4, height = 32, width = 32;
  int64_t patch_size = 2, hidden_size = 384, depth = 12, num_heads = 6;
  double mlp_ratio = 4.0;
  int64_t num_classes = 0;
  bool long_skips = false;
  std::string time_embedding = "sinusoidal";
  double time_scale = 1.0;

  static DiTConfig from_json(const std::string& text);  // Error "dit config: 'key' = value: why"
  std::string to_json() const;
  void validate() const;
};

NetworkPtr make_dit(const DiTConfig& cfg);

// The fixed 2-D sin-cos positional embedding of DiT/MAE, [gh * gw, dim]
// (float32): the first half encodes the column, the second the row, each as
// [sin(pos * w_k), cos(pos * w_k)] with w_k = 10000^(-k / (dim / 4)).
torch::Tensor sincos_pos_embed_2d(int64_t dim, int64_t gh, int64_t gw);

}  // namespace tweedie
