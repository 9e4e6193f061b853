// Private to src/nn: fused CPU attention for inference (see flash_attention.cpp).
#pragma once
#include <torch/torch.h>

namespace tweedie::detail {

// True when fused_attention can take these inputs: no gradient recorded,
// CPU tensors of one dtype (float32 or bfloat16), q [B, H, Lq, d],
// k [B, H, Lk, d], v [B, H, Lk, dv], each with unit stride in the last dim.
bool fused_attention_applies(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

// softmax(q k^T * scale) v per (batch, head), returned as [B, Lq, H * dv]
// contiguous in q's dtype (the heads side by side, as the output projection
// reads them). Blocks of query rows at a time: their scores (float32) are
// computed by one GEMM, soft-maxed in float32 while in cache and multiplied
// by v by a second GEMM; no [Lq, Lk] tensor is ever materialized and q, k, v
// are read in place through their strides (no transposing copies).
torch::Tensor fused_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale);

// Tests: use the portable scalar row kernels even where AVX-512 is available.
void force_portable_attention_kernels(bool on);

}  // namespace tweedie::detail
