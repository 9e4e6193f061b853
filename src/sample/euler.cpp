// Euler and Euler ancestral (k-diffusion sample_euler / sample_euler_ancestral;
// Karras et al. 2022 Algorithm 2 without the second-order correction).
//
// Euler:   d = (x - x0)/s (the PF-ODE derivative),  x' = x + (s' - s) d,
//          with optional churn (EDM S_churn, S_tmin, S_tmax, S_noise): first
//          raise the level to s_hat = s (1 + gamma) by adding fresh noise.
// Euler-a: Euler to s_down, then add noise to reach s' (ancestral split of
//          Process::ancestral_step, eta = 1 by default).
// On a flow process this is flow-matching Euler (euler on x_t with s = t).
// Verified: first order against the exact GMM PF-ODE; euler == ddim; euler-a
// reproduces the mixture's mean and covariance.
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/sample/sampler.h"

namespace tweedie {
namespace {

torch::Tensor euler(SamplerRun& r, torch::Tensor x) {
  const Process& p = r.process();
  for (int i = 0; i < r.steps(); ++i) {
    const double s = r.churn(x, r.sigmas[i]), sn = r.sigmas[i + 1];
    Prediction pr = r.denoise(x, s);
    x = x + p.ode_derivative(x, pr.x0(), s) * (sn - s);
    r.report(i, x, pr.x0());
  }
  return x;
}

torch::Tensor euler_ancestral(SamplerRun& r, torch::Tensor x) {
  const Process& p = r.process();
  const double eta = r.opt.eta_or(1.0);
  for (int i = 0; i < r.steps(); ++i) {
    const double s = r.sigmas[i], sn = r.sigmas[i + 1];
    Prediction pr = r.denoise(x, s);
    auto st = p.ancestral_step(s, sn, eta);
    x = x + p.ode_derivative(x, pr.x0(), s) * (st.s_down - s);
    x = r.renoise(x, st);
    r.report(i, x, pr.x0());
  }
  return x;
}

SamplerRegistrar reg1(SamplerInfo{"euler", "Euler on the probability-flow ODE (flow Euler on flow models); --churn for EDM churn",
                       "Karras et al. 2022, Alg. 2 (first order)", euler}.ode(1).alias("flow-euler"));
SamplerRegistrar reg2(SamplerInfo{"euler-a", "Euler ancestral: Euler to sigma_down, then fresh noise (--eta, default 1)",
                       "k-diffusion sample_euler_ancestral", euler_ancestral}.sde().alias("euler_a"));

}  // namespace
}  // namespace tweedie
