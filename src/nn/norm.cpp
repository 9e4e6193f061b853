// GroupNorm32 and LayerNorm computed in float32 (see include/tweedie/nn/norm.h).
// Verified in tests/test_networks.cpp (bf16 forward agrees with fp32) and, for
// the fused inference kernels, tests/test_fused_ops.cpp.
#include "tweedie/nn/norm.h"

#include "fused_ops.h"
#include "inplace.h"
#include "tweedie/core/error.h"

namespace tweedie {

GroupNorm32Impl::GroupNorm32Impl(int64_t groups, int64_t channels, double eps) : groups_(groups), eps_(eps) {
  check(groups >= 1 && channels % groups == 0, "GroupNorm: ", groups, " groups do not divide ", channels, " channels");
  weight = register_parameter("weight", torch::ones({channels}));
  bias = register_parameter("bias", torch::zeros({channels}));
}

torch::Tensor GroupNorm32Impl::forward(const torch::Tensor& x) { return normalize(x, false); }

torch::Tensor GroupNorm32Impl::forward_silu(const torch::Tensor& x) { return normalize(x, true); }

torch::Tensor GroupNorm32Impl::normalize(const torch::Tensor& x, bool silu) {
  auto act = [silu](torch::Tensor y) { return silu ? detail::silu_owned(std::move(y)) : y; };
  if (x.scalar_type() == torch::kFloat32 && weight.scalar_type() == torch::kFloat32 && x.is_contiguous())
    return act(torch::group_norm(x, groups_, weight, bias, eps_));
  // Inference on a channels_last CPU tensor (bf16, or fp32 not NCHW-contiguous): one fused kernel.
  if (detail::fused_group_norm_applies(x)) return detail::fused_group_norm(x, groups_, weight, bias, eps_, silu);
  if (x.dim() == 4 && x.size(1) > 1 && x.is_contiguous(torch::MemoryFormat::ChannelsLast) &&
      x.scalar_type() != torch::kFloat64) {
    // channels_last (the bf16 networks' layout): float32 statistics over the
    // NHWC memory as it is, output in the same layout (no transposing copies).
    const int64_t N = x.size(0), C = x.size(1), G = groups_;
    auto xf = x.to(torch::kFloat32).permute({0, 2, 3, 1}).reshape({N, -1, G, C / G});  // a view
    auto vm = torch::var_mean(xf, {1, 3}, /*unbiased=*/false, /*keepdim=*/true);      // [N, 1, G, 1]
    auto a = (std::get<0>(vm) + eps_).rsqrt() * weight.to(torch::kFloat32).view({1, 1, G, C / G});
    auto b = bias.to(torch::kFloat32).view({1, 1, G, C / G}) - std::get<1>(vm) * a;
    auto y = torch::addcmul(b, xf, a).to(x.scalar_type());  // [N, HW, G, C/G]
    return act(y.view({N, x.size(2), x.size(3), C}).permute({0, 3, 1, 2}));
  }
  // Float32 (float64 for float64 input) statistics on a contiguous NCHW tensor, whatever x's dtype/layout.
  const auto ct = x.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  auto y = torch::group_norm(x.to(ct).contiguous(), groups_, weight.to(ct), bias.to(ct), eps_);
  return act(y.to(x.scalar_type()));
}

torch::Tensor layer_norm_f32(const torch::Tensor& x, double eps, const torch::Tensor& weight,
                             const torch::Tensor& bias) {
  const int64_t d = x.size(-1);
  if (x.scalar_type() == torch::kFloat32 && (!weight.defined() || weight.scalar_type() == torch::kFloat32))
    return torch::layer_norm(x, {d}, weight, bias, eps);
  if (detail::fused_layer_norm_applies(x)) return detail::fused_layer_norm(x, eps, weight, bias);  // bf16 inference
  const auto ct = x.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;  // at least float32
  auto f = [&](const torch::Tensor& t) { return t.defined() ? t.to(ct) : t; };
  return torch::layer_norm(x.to(ct), {d}, f(weight), f(bias), eps).to(x.scalar_type());
}

}  // namespace tweedie
