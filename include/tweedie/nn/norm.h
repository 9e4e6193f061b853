// Normalization computed in float32 whatever the activation dtype
// (ADM's GroupNorm32, Dhariwal & Nichol 2021: `super().forward(x.float()).type(x.dtype)`).
//
// Under bf16 the statistics are computed in float32 and the result is cast
// back: torch 1.13's bf16 GroupNorm is wrong for channels_last inputs on this
// machine, and bf16 statistics lose precision. A channels_last input is
// normalized in its own layout (statistics over the NHWC memory, output
// channels_last); other layouts go through a contiguous NCHW float32 copy.
// In float32 with contiguous input there is no copy at all. Under no grad mode
// a bf16/fp32 channels_last input on CPU takes a fused kernel instead
// (statistics combined in float64, one rounding; src/nn/fused_ops.cpp), and so
// does a contiguous bf16 input of layer_norm_f32.
// Verified in tests/test_networks.cpp (bf16 vs fp32 forward) and
// tests/test_fused_ops.cpp (the fused kernels vs float64 references).
#pragma once
#include <torch/nn/module.h>
#include <torch/types.h>

namespace tweedie {

class GroupNorm32Impl : public torch::nn::Module {
 public:
  GroupNorm32Impl(int64_t groups, int64_t channels, double eps = 1e-5);
  torch::Tensor forward(const torch::Tensor& x);  // [N, C, ...] -> same dtype as x
  // silu(forward(x)). Under no grad, a bf16/fp32 channels_last input takes one
  // fused pass (src/nn/fused_ops.cpp: SiLU applied in fp32 before the single
  // rounding); otherwise exactly forward then SiLU (in place when no grad).
  torch::Tensor forward_silu(const torch::Tensor& x);
  int64_t groups() const { return groups_; }
  torch::Tensor weight, bias;

 private:
  torch::Tensor normalize(const torch::Tensor& x, bool silu);
  int64_t groups_;
  double eps_;
};
TORCH_MODULE(GroupNorm32);

// LayerNorm over the last dimension in float32, cast back to x's dtype.
// weight/bias may be undefined (no affine, as in DiT's norm1/norm2).
torch::Tensor layer_norm_f32(const torch::Tensor& x, double eps = 1e-6, const torch::Tensor& weight = {},
                             const torch::Tensor& bias = {});

}  // namespace tweedie
