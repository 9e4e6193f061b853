// AdaGN and adaLN(-Zero) modulation (see include/tweedie/nn/modulation.h).
// Verified in tests/test_networks.cpp (DiT is exactly zero at init; AdaGN
// against direct evaluation).
#include "tweedie/nn/modulation.h"

#include "inplace.h"
#include "tweedie/core/error.h"

namespace tweedie {

torch::Tensor ada_group_norm(GroupNorm32& norm, const torch::Tensor& h, const torch::Tensor& scale,
                             const torch::Tensor& shift) {
  auto n = norm->forward(h);
  const int64_t N = scale.size(0), C = scale.size(1);
  auto sc = scale.reshape({N, C, 1, 1}), sh = shift.reshape({N, C, 1, 1});
  if (detail::can_inplace() && !n.is_same(h)) return n.mul_(sc + 1).add_(sh);
  return torch::addcmul(sh, n, sc + 1);
}

torch::Tensor modulate(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale) {
  return torch::addcmul(shift.unsqueeze(1), x, (scale + 1).unsqueeze(1));
}

AdaLNModulationImpl::AdaLNModulationImpl(int64_t cond_dim, int64_t dim, int64_t chunks) : chunks_(chunks) {
  linear = register_module("1", torch::nn::Linear(cond_dim, chunks * dim));
  torch::NoGradGuard g;
  linear->weight.zero_();
  linear->bias.zero_();
}

std::vector<torch::Tensor> AdaLNModulationImpl::forward(const torch::Tensor& c) {
  return linear->forward(torch::silu(c)).chunk(chunks_, 1);
}

}  // namespace tweedie
