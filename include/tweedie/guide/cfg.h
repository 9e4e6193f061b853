// Classifier-free guidance (Ho & Salimans 2022) as a Denoiser over a Denoiser:
//   x0 = x0_uncond + w (x0_cond - x0_uncond)
// (identical in eps, x0 or v form at a fixed state, since the conversions are
// affine with the same x). w = 1 is the conditional model, w = 0 the
// unconditional one. The unconditional eps is kept as the prediction's
// renoise_eps for CFG++ samplers (Chung et al. 2024).
#pragma once
#include "tweedie/models/denoiser.h"

namespace tweedie {

class CFGDenoiser : public Denoiser {
 public:
  CFGDenoiser(DenoiserPtr inner, double scale);
  const Process& process() const override { return inner_->process(); }
  Prediction predict(const torch::Tensor& x, double s, const Cond& c) override;

 private:
  DenoiserPtr inner_;
  double scale_;
};

}  // namespace tweedie
