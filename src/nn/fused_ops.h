// Private helper for src/nn and src/models: fused CPU kernels for the
// inference hot spots of the bf16 Stable Diffusion UNet / VAE (see
// src/nn/fused_ops.cpp for what each computes and how it is verified).
//
// Each kernel has a predicate saying whether it applies (no grad mode, CPU,
// the dtypes and layouts it handles); callers keep their torch code as the
// path under autograd and for everything else.
#pragma once
#include <torch/torch.h>

#include <cstdint>

namespace tweedie::detail {

// GroupNorm (+ optional SiLU) on a 4-D channels_last CPU tensor, bf16 or fp32,
// with any floating-point affine weight/bias of C elements. Statistics by a
// two-pass (mean, then centered squares) per block of pixels, blocks combined
// in float64; output in x's dtype and layout.
bool fused_group_norm_applies(const torch::Tensor& x);
torch::Tensor fused_group_norm(const torch::Tensor& x, int64_t groups, const torch::Tensor& weight,
                               const torch::Tensor& bias, double eps, bool silu);

// LayerNorm over the last dimension of a contiguous bf16 CPU tensor; weight and
// bias (d elements, any floating dtype) may be undefined. Output bf16, contiguous.
bool fused_layer_norm_applies(const torch::Tensor& x);
torch::Tensor fused_layer_norm(const torch::Tensor& x, double eps, const torch::Tensor& weight,
                               const torch::Tensor& bias);

// GEGLU: x [..., 2n] contiguous bf16 CPU -> a * gelu(g) [..., n] bf16, where
// (a, g) = x.chunk(2, -1) and gelu is the exact (erf) GELU.
bool fused_geglu_applies(const torch::Tensor& x);
torch::Tensor fused_geglu(const torch::Tensor& x);

// The scalar building blocks, exposed for the tests.
float bf16_bits_to_float(uint16_t h);
uint16_t float_to_bf16_bits(float f);  // round to nearest even, NaN -> 0x7fc0 (as c10::BFloat16)
float erf_approx(float z);             // |error| <= 2e-7 (measured ~1e-7)
float exp_approx(float x);             // relative error ~1 ulp for x in [-87, 88]; clamps outside, NaN -> exp(-87)

}  // namespace tweedie::detail
