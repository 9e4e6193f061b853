// The transformer of latent diffusion (Rombach et al. 2022, "High-Resolution
// Image Synthesis with Latent Diffusion Models"; CompVis ldm/modules/attention.py,
// Stability-AI generative-models sgm/modules/attention.py), with the module
// names of their checkpoints so that loading is a name match:
//
//   CrossAttention ("attn1", "attn2"): to_q, to_k, to_v (Linear, no bias),
//     to_out.0 (Linear with bias); softmax(q k^T / sqrt(d_head)) v per head.
//     Self-attention when no context dimension is given.
//   FeedForward ("ff", GEGLU, Shazeer 2020): net.0.proj = Linear(dim, 2 * 4 dim)
//     split into value a and gate g (in that order), a * gelu(g) (exact erf
//     GELU), then net.2 = Linear(4 dim, dim).
//   BasicTransformerBlock: x += attn1(LN1(x)); x += attn2(LN2(x), context);
//     x += ff(LN3(x)); LayerNorms norm1..3 (eps 1e-5) computed in float32.
//   SpatialTransformer: x_in + proj_out(blocks(proj_in(GroupNorm(x)))) over
//     the H*W tokens of an NCHW tensor; norm is GroupNorm(32, C, eps 1e-6),
//     proj_in/proj_out are 1x1 convolutions (SD1) or Linear layers on the
//     tokens (SD2, SDXL: use_linear_in_transformer); proj_out starts at zero.
//
// Hook sites at a block path P (see hooks.h, attention.h):
//   P.attn1.{q,k,v,probs,out}  self-attention (q/k/v [B, heads, L, d])
//   P.attn2.{q,k,v,probs,out}  cross-attention on the context (Lk = context length)
//   P.ff.out                   feed-forward output before the residual add
// Activations follow the input's memory format: channels_last input needs no
// copy to become tokens [B, H*W, C] and back.
// Verified in tests/test_sd_unet.cpp: a float64 hand computation of one
// SpatialTransformer (both projection kinds), hook sites, bf16 agreement.
#pragma once
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

#include "tweedie/nn/attention.h"
#include "tweedie/nn/hooks.h"
#include "tweedie/nn/norm.h"

namespace tweedie {

class CrossAttentionImpl : public torch::nn::Module {
 public:
  // context_dim 0: self-attention (keys and values from x).
  CrossAttentionImpl(int64_t query_dim, int64_t heads, int64_t dim_head, int64_t context_dim = 0,
                     const std::string& site = "");
  // x [B, L, query_dim]; context [B, Lk, context_dim] (cross-attention only).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context = {}, const Hooks* hooks = nullptr);
  int64_t heads() const { return heads_; }

  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, to_out{nullptr};  // to_out = "to_out.0"

 private:
  int64_t heads_, dim_head_;
  bool self_;
  AttentionSites sites_;
};
TORCH_MODULE(CrossAttention);

// a * gelu(g) with [a, g] = x split in two halves along the last dimension.
torch::Tensor geglu(const torch::Tensor& x);

class GEGLUFeedForwardImpl : public torch::nn::Module {
 public:
  GEGLUFeedForwardImpl(int64_t dim, int64_t mult = 4);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear proj{nullptr}, out{nullptr};  // "net.0.proj", "net.2"
};
TORCH_MODULE(GEGLUFeedForward);

class BasicTransformerBlockImpl : public torch::nn::Module {
 public:
  BasicTransformerBlockImpl(int64_t dim, int64_t heads, int64_t dim_head, int64_t context_dim,
                            const std::string& site = "");
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context, const Hooks* hooks = nullptr);

  CrossAttention attn1{nullptr}, attn2{nullptr};
  GEGLUFeedForward ff{nullptr};
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};

 private:
  std::string site_ff_;
};
TORCH_MODULE(BasicTransformerBlock);

struct SpatialTransformerOptions {
  int64_t channels = 0, heads = 8, dim_head = 64, depth = 1, context_dim = 768, groups = 32;
  bool use_linear = false;  // Linear proj_in/proj_out on tokens (SD2, SDXL) instead of 1x1 convs (SD1)
};

class SpatialTransformerImpl : public torch::nn::Module {
 public:
  explicit SpatialTransformerImpl(const SpatialTransformerOptions& o, const std::string& site = "");
  // x [B, C, H, W] (any memory format), context [B, Lk, context_dim].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context, const Hooks* hooks = nullptr);

  GroupNorm32 norm{nullptr};
  torch::nn::Conv2d proj_in_conv{nullptr}, proj_out_conv{nullptr};
  torch::nn::Linear proj_in_linear{nullptr}, proj_out_linear{nullptr};
  std::vector<BasicTransformerBlock> blocks;  // "transformer_blocks.<i>"

 private:
  SpatialTransformerOptions o_;
};
TORCH_MODULE(SpatialTransformer);

}  // namespace tweedie
