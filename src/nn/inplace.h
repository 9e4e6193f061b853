// Private helper for src/nn and src/models: in-place activation arithmetic
// when no gradient is being recorded (inference), out-of-place otherwise, so
// autograd never sees an overwritten saved tensor. The caller guarantees the
// tensor is a fresh temporary it owns.
#pragma once
#include <torch/torch.h>

namespace tweedie::detail {

inline bool can_inplace() { return !torch::GradMode::is_enabled(); }
inline torch::Tensor silu_owned(torch::Tensor x) { return can_inplace() ? torch::silu_(x) : torch::silu(x); }
inline torch::Tensor add_owned(torch::Tensor x, const torch::Tensor& y) {
  return can_inplace() && x.sizes() == y.sizes() ? x.add_(y) : x + y;
}

}  // namespace tweedie::detail
