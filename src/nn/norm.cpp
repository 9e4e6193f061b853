// GroupNorm32 and LayerNorm computed in float32 (see include/tweedie/nn/norm.h).
// Verified in tests/test_networks.cpp (bf16 forward agrees with fp32).
#include "tweedie/nn/norm.h"

#include "tweedie/core/error.h"

namespace tweedie {

GroupNorm32Impl::GroupNorm32Impl(int64_t groups, int64_t channels, double eps) : groups_(groups), eps_(eps) {
  check(groups >= 1 && channels % groups == 0, "GroupNorm: ", groups, " groups do not divide ", channels, " channels");
  weight = register_parameter("weight", torch::ones({channels}));
  bias = register_parameter("bias", torch::zeros({channels}));
}

torch::Tensor GroupNorm32Impl::forward(const torch::Tensor& x) {
  if (x.scalar_type() == torch::kFloat32 && weight.scalar_type() == torch::kFloat32 && x.is_contiguous())
    return torch::group_norm(x, groups_, weight, bias, eps_);
  // Float32 statistics on a contiguous NCHW tensor, whatever x's dtype/layout.
  auto y = torch::group_norm(x.to(torch::kFloat32).contiguous(), groups_, weight.to(torch::kFloat32),
                             bias.to(torch::kFloat32), eps_);
  return y.to(x.scalar_type());
}

torch::Tensor layer_norm_f32(const torch::Tensor& x, double eps, const torch::Tensor& weight,
                             const torch::Tensor& bias) {
  const int64_t d = x.size(-1);
  if (x.scalar_type() == torch::kFloat32 && (!weight.defined() || weight.scalar_type() == torch::kFloat32))
    return torch::layer_norm(x, {d}, weight, bias, eps);
  auto f = [](const torch::Tensor& t) { return t.defined() ? t.to(torch::kFloat32) : t; };
  return torch::layer_norm(x.to(torch::kFloat32), {d}, f(weight), f(bias), eps).to(x.scalar_type());
}

}  // namespace tweedie
