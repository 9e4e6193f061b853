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

Prediction CFGDenoiser::predict(const torch::Tensor& x, double s, const Cond& c) {
  Prediction cond = inner_->predict(x, s, c);
  if (scale_ == 1.0) return cond;
  Prediction uncond = inner_->predict(x, s, c.null_like());
  Prediction out = Prediction::from_x0(uncond.x0() + (cond.x0() - uncond.x0()) * scale_, x, s, inner_->process());
  out.set_renoise_eps(uncond.eps());
  return out;
}

}  // namespace tweedie
