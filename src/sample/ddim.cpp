// DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models").
//
// Update, in sampling space (x = a x0 + s eps):
//   x0, eps = D(x, s);  (s_down, noise, scale) = ancestral split for eta
//   x' = scale * (a(s_down) x0 + s_down eps) + noise * z
// eta = 0 (default) is the deterministic DDIM / first-order exponential
// integrator and runs backwards for inversion; eta = 1 is the DDPM posterior.
// Verified: first-order convergence to the exact PF-ODE of a Gaussian
// mixture, equality with Euler (the same update), inversion round trip.
#include "tweedie/sample/sampler.h"

namespace tweedie {

torch::Tensor ddim_step(const Process& p, const Prediction& pr, double s_to) { return p.add_noise(pr.x0(), pr.eps(), s_to); }

namespace {

torch::Tensor ddim(SamplerRun& r, torch::Tensor x) {
  const Process& p = r.process();
  const double eta = r.opt.eta_or(0.0);
  for (int i = 0; i < r.steps(); ++i) {
    const double s = r.sigmas[i], sn = r.sigmas[i + 1];
    Prediction pr = r.denoise(x, s);
    auto st = p.ancestral_step(s, sn, eta);
    x = r.renoise(ddim_step(p, pr, st.s_down), st);
    r.report(i, x, pr.x0());
  }
  return x;
}

SamplerRegistrar reg(SamplerInfo{"ddim", "DDIM; --eta 0 deterministic (default), 1 = DDPM posterior", "Song et al. 2021, DDIM",
                      ddim}.ode(1));

}  // namespace
}  // namespace tweedie
