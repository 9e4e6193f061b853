// Heun (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
// Generative Models", Algorithm 2; k-diffusion sample_heun).
//
// Update, with d(x, s) = (x - x0(x, s)) / s the PF-ODE derivative:
//   optional churn (S_churn, S_tmin, S_tmax, S_noise): raise the level to
//     s_hat = s (1 + gamma), gamma = min(S_churn / steps, sqrt 2 - 1), by adding
//     fresh noise, as in Euler;
//   x~ = x + (s' - s_hat) d(x, s_hat)                       (Euler predictor)
//   x' = x + (s' - s_hat) (d(x, s_hat) + d(x~, s')) / 2     (trapezoid corrector)
// The step to s' = 0 is a plain Euler step (the denoiser is not evaluated at 0),
// so Heun starts at sigmas[0] (s = 1 on flow is fine) and stops at the last
// level. On a flow process this is flow-matching Heun (x is x_t, s is t).
// Verified: second order against the exact GMM PF-ODE on vp, edm and flow;
// equal to Algorithm 2 written out for one step; inversion round trip.
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/sample/sampler.h"

namespace tweedie {
namespace {

torch::Tensor heun(SamplerRun& r, torch::Tensor x) {
  const Process& p = r.process();
  for (int i = 0; i < r.steps(); ++i) {
    const double s = r.churn(x, r.sigmas[i]), sn = r.sigmas[i + 1];
    Prediction pr = r.denoise(x, s);
    auto d = p.ode_derivative(x, pr.x0(), s);
    if (sn == 0) {
      x = x + d * (sn - s);
    } else {
      auto x2 = x + d * (sn - s);
      Prediction pr2 = r.denoise(x2, sn);
      x = x + (d + p.ode_derivative(x2, pr2.x0(), sn)) * ((sn - s) / 2);
    }
    r.report(i, x, pr.x0());
  }
  return x;
}

SamplerRegistrar reg(SamplerInfo{"heun", "Heun's second-order method on the PF-ODE (flow Heun on flow models); --churn for EDM churn",
                      "Karras et al. 2022, Alg. 2", heun}.ode(2).alias("flow-heun"));

}  // namespace
}  // namespace tweedie
