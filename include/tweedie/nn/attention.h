// Multi-head scaled dot-product attention (Vaswani et al. 2017) with hook sites.
//
// softmax(q k^T / sqrt(d)) v per head. Two paths with the same math:
// - efficient: the probabilities are never materialized for the whole
//   problem; query rows are processed in chunks of at most `max_chunk_elems`
//   scores, into two reused buffers when no gradient is recorded;
// - explicit: used only when a hook wants "<site>.probs"; the full
//   probabilities [B*heads, Lq, Lk] (float32) go through the hook and are then
//   applied to v.
// Scores are written by bmm and then scaled (never baddbmm with beta = 0 on an
// uninitialized buffer, which gives NaN in this torch build).
//
// Hook sites of an attention at module path P (see hooks.h):
//   P.q / P.k / P.v   [B, heads, L, d] after projection (a hook may change Lk)
//   P.probs           [B*heads, Lq, Lk] float32, rows sum to 1
//   P.out             [B, Lq, C] after the output projection, before any residual add
// Verified in tests/test_networks.cpp: both paths agree with a float64
// reference to 1e-5, probabilities rows sum to 1, zeroing P.out equals a
// model without that attention branch.
#pragma once
#include <string>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include "tweedie/nn/hooks.h"
#include "tweedie/nn/norm.h"

namespace tweedie {

// Default chunk size of the efficient path: 4M scores (16 MB in float32).
constexpr int64_t kAttentionChunkElems = int64_t(1) << 22;

// q [BH, Lq, d], k [BH, Lk, d], v [BH, Lk, dv] -> [BH, Lq, dv].
torch::Tensor scaled_dot_product_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                           double scale, int64_t max_chunk_elems = kAttentionChunkElems);
// softmax(q k^T * scale) in float32 [BH, Lq, Lk].
torch::Tensor attention_probs(const torch::Tensor& q, const torch::Tensor& k, double scale);

// The hook site names of one attention, built once at construction.
struct AttentionSites {
  AttentionSites() = default;
  explicit AttentionSites(const std::string& path);
  bool any = false;  // false: no site (module not inside a network)
  std::string q, k, v, probs, out;
};

// Multi-head attention on projected q [B, Lq, C], k [B, Lk, C], v [B, Lk, Cv]
// (any strides), firing the q/k/v/probs sites. Returns [B, Lq, Cv], contiguous.
torch::Tensor multihead_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  int64_t heads, const AttentionSites& sites, const Hooks* hooks);

// Token attention (timm's Attention; DiT): self-attention with a fused "qkv"
// projection, or cross-attention ("q" from x, "kv" from the context) when
// context_dim > 0; output projection "proj". Fires P.out after "proj".
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t dim, int64_t heads, int64_t context_dim = 0, const std::string& site = "");
  // x [B, L, dim]; context [B, Lk, context_dim] (cross-attention only).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context = {}, const Hooks* hooks = nullptr);
  int64_t heads() const { return heads_; }

  torch::nn::Linear qkv{nullptr}, q{nullptr}, kv{nullptr}, proj{nullptr};

 private:
  int64_t dim_, heads_;
  AttentionSites sites_;
};
TORCH_MODULE(Attention);

// ADM's spatial self-attention block: x + proj_out(attn(GroupNorm(x))) over
// the H*W positions of an NCHW tensor; "qkv" and a zero-initialized
// "proj_out" (the block starts as the identity). Sites at path P as above,
// P.out in token layout [B, H*W, C].
class AttentionBlock2dImpl : public torch::nn::Module {
 public:
  AttentionBlock2dImpl(int64_t channels, int64_t heads, int64_t groups, const std::string& site = "");
  torch::Tensor forward(const torch::Tensor& x, const Hooks* hooks = nullptr);

  GroupNorm32 norm{nullptr};
  torch::nn::Linear qkv{nullptr}, proj_out{nullptr};

 private:
  int64_t channels_, heads_;
  AttentionSites sites_;
};
TORCH_MODULE(AttentionBlock2d);

}  // namespace tweedie
