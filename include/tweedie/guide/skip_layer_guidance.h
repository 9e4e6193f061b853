// Skip-Layer Guidance (Stability AI, Stable Diffusion 3.5, 2024; diffusers'
// SkipLayerGuidance guider): the weak branch is the model itself with chosen
// transformer layers skipped (a skipped layer passes its input through:
// every residual branch inside it, self-attention, cross-attention and
// feed-forward, contributes 0), and guidance pushes away from it over a
// window of the sampling steps:
//   x0 = x0(neg) + w(s) (x0(c) - x0(neg)) + s_slg (x0(c) - x0_skip(c))
// for steps i with start <= i / steps < stop (SD 3.5: layers 7, 8, 9 of its
// MMDiT, s_slg 2.8 with CFG 4.5, steps 1 % to 20 %), CFG alone elsewhere.
// It is PAG's batched call (pag.h) with another perturbation: the rows of the
// skipping branch get zeros at the residual-branch sites "<layer>.<m>.out" of
// each chosen layer (SD UNets: attn1, attn2, ff of a transformer block;
// DiT: attn and mlp of a block; tweedie's UNet: the attention blocks of a
// stage, e.g. "mid.attn").
//
// Layers are given as paths or as indices into the network's transformer
// layers in module order (skip_layer_paths: SD's
// "<block>.<k>.transformer_blocks.<j>", DiT's "blocks.<i>"); the default is
// the layer holding the network's middle self-attention.
// Verified in tests/test_guidance.cpp (SLG*).
#pragma once
#include <string>
#include <vector>

#include "tweedie/guide/pag.h"

namespace tweedie {

// The network's transformer layers in module order (hook-site paths).
std::vector<std::string> skip_layer_paths(const Network& net);
// "7,8,9" or "middle_block.1.transformer_blocks.0,..." -> layer paths;
// Error naming --option for an index out of range or an empty item.
std::vector<std::string> skip_layers(const Network& net, const std::string& text, const std::string& option);
// The layer holding the network's middle self-attention (its parent path).
std::string middle_skip_layer(const Network& net);

// PAG's options for SLG: zeros on the skipping rows at each layer's residual
// branches, only while start <= step / steps < stop (outside sampling: always).
PAGOptions skip_layer_options(double scale, std::vector<std::string> layers, double start, double stop);

}  // namespace tweedie
