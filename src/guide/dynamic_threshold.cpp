// Dynamic thresholding (Saharia et al. 2022, Imagen, Sec. 2.3):
//   s = clamp(quantile(|x0|, p), 1, max_value) per sample,
//   x0 <- clamp(x0, -s, s) / s.
// Verified in tests/test_guidance.cpp against a hand computation (with and
// without max_value), as a no-op where it does not bind (every |x0| <= 1),
// and as the outermost rule of make_guidance (it sees the rescaled CFG x0).
#include "tweedie/guide/dynamic_threshold.h"

#include <cmath>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/guide/guidance.h"

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

namespace tweedie {
namespace {

DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions& g, const std::shared_ptr<NetDenoiser>&) {
  return std::make_shared<DynamicThresholdDenoiser>(std::move(inner), g.number("dynamic-threshold"),
                                                    g.number("dynamic-threshold-max"));
}

std::string describe(const GuidanceOptions& g) {
  std::ostringstream o;
  o << ", dynamic threshold " << g.number("dynamic-threshold");
  if (std::isfinite(g.number("dynamic-threshold-max"))) o << " max " << g.number("dynamic-threshold-max");
  return o.str();
}

// Outermost: it acts on exactly the x0 the sampler sees.
GuidanceRuleRegistrar reg(GuidanceRuleInfo{"dynamic-threshold", "clip x0 to its p-th percentile of |x0|, rescaled",
                                           "Saharia et al. 2022 (Imagen)", 70, build, describe}
                              .option(MethodOption{"dynamic-threshold", 0,
                                                   "Imagen dynamic thresholding of x0 at this percentile p, e.g. 0.995"}
                                          .in(0, 1, true, true))
                              .option(MethodOption{"dynamic-threshold-max", INFINITY,
                                                   "upper bound of the dynamic threshold (diffusers' sample_max_value)"}
                                          .at_least(1)
                                          .or_infinite()));

}  // namespace
}  // namespace tweedie
