// Classifier-free guidance (Ho & Salimans 2022, "Classifier-Free Diffusion
// Guidance"). Verified on the class-labelled Gaussian mixture: w = 1 equals
// the conditional posterior mean, w = 0 the unconditional one, and the
// guided x0 is the affine combination exactly.
#include "tweedie/guide/cfg.h"

#include "tweedie/core/error.h"

namespace tweedie {

CFGDenoiser::CFGDenoiser(DenoiserPtr inner, double scale) : inner_(std::move(inner)), scale_(scale) {
  check(std::isfinite(scale), "cfg scale must be finite");
}

// Both branches run as one batch [cond; uncond] (one network call per NFE).
Prediction CFGDenoiser::predict(const torch::Tensor& x, double s, const Cond& c) {
  if (scale_ == 1.0) return inner_->predict(x, s, c);
  Prediction both = inner_->predict(torch::cat({x, x}), s, c.concat(c.null_like()));
  auto x0 = both.x0().chunk(2), eps = both.eps().chunk(2);
  Prediction out = Prediction::from_x0(x0[1] + (x0[0] - x0[1]) * scale_, x, s, inner_->process());
  out.set_renoise_eps(eps[1]);
  return out;
}

}  // namespace tweedie
