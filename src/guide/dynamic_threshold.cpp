// Dynamic thresholding (Saharia et al. 2022, Imagen, Sec. 2.3):
//   s = clamp(quantile(|x0|, p), 1, max_value) per sample,
//   x0 <- clamp(x0, -s, s) / s.
// Verified in tests/test_guidance.cpp against a hand computation (with and
// without max_value), as a no-op where it does not bind (every |x0| <= 1),
// and as the outermost rule of make_guidance (it sees the rescaled CFG x0).
#include "tweedie/guide/dynamic_threshold.h"

#include "tweedie/core/error.h"

namespace tweedie {

namespace {
void check_args(double p, double max_value) {
  check(p > 0 && p < 1, "dynamic threshold percentile must be in (0, 1) (got ", p, ")");
  check(max_value >= 1, "dynamic threshold max value must be >= 1 (got ", max_value, ")");
}
}  // namespace

torch::Tensor dynamic_threshold(const torch::Tensor& x0, double p, double max_value) {
  check_args(p, max_value);
  const int64_t n = x0.size(0);
  auto flat = x0.reshape({n, -1});
  auto q = flat.abs().to(flat.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32).quantile(p, 1, true);
  auto s = q.clamp(1.0, max_value).to(x0.scalar_type());  // [n, 1]
  return (torch::max(torch::min(flat, s), -s) / s).reshape(x0.sizes());
}

DynamicThresholdDenoiser::DynamicThresholdDenoiser(DenoiserPtr inner, double p, double max_value)
    : GuidanceRule(std::move(inner)), p_(p), max_(max_value) {
  check_args(p, max_value);
}

Prediction DynamicThresholdDenoiser::guide(const torch::Tensor& x, double s, const Cond& c) {
  Prediction in = inner(x, s, c);
  Prediction out = Prediction::from_x0(dynamic_threshold(in.x0(), p_, max_), x, s, process());
  return out;
}

}  // namespace tweedie
