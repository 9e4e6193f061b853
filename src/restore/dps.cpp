// DPS (Chung, Kim, Mccann, Klasky & Ye 2023, "Diffusion Posterior Sampling
// for General Noisy Inverse Problems", ICLR; Algorithm 1, Gaussian noise).
//
// Each step is an ancestral (DDPM) step on the denoiser's estimate, followed
// by a gradient step on the measurement residual through the denoiser:
//   x0 = D(x, s)                                    (with autograd on)
//   x' = renoise(ddim_step(x0, s_down))             (eta = 1: the DDPM posterior)
//   x' = x' - zeta' grad_{x_t} |y - A x0(x_t)|      (per sample; = zeta' / |r| * grad |r|^2 / 2)
// written in the model's space x_t = x * model_scale(s), as the paper does, so
// in sampling space the correction is zeta' g / (model_scale(s) model_scale(s'))
// with g the gradient with respect to x. zeta' (RestoreOptions::zeta,
// --zeta) is the paper's step size (it uses 0.3 to 1).
// Verified (tests/test_restore.cpp): the gradient through the denoiser
// matches the closed form J^T A^T r / |r| of a Gaussian prior; the mean of
// many runs of a noisy super-resolution moves most of the way from the prior
// mean to the closed-form posterior mean and the residual |A x - y| falls
// below the noise level; zeta = 0 is DDIM with eta 1 (DDPM), bit for bit.
// The step (dps_step, solver.h) is also the first half of MCG's (mcg.cpp),
// and of PSLD's and ReSample's on latent models, where A acts on the
// decoder's pixels (Measurement::measure).
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/restore/solver.h"

namespace tweedie {

GuidedStep dps_step(SamplerRun& r, const Measurement& m, const torch::Tensor& x, int i, double eta, double zeta,
                    const char* who, const LossFn& extra) {
  const Process& p = r.process();
  const double s = r.sigmas[i], sn = r.sigmas[i + 1];
  const auto y = m.y.to(x.options());
  auto xg = x.detach().requires_grad_(true);
  torch::AutoGradMode grad_on(true);
  Prediction pr = r.denoise(xg, s);
  check(pr.x0().requires_grad(), who, ": the denoiser is not differentiable (no gradient reaches its output)");
  auto residual = (y - m.measure(pr.x0())).flatten(1).norm(2, 1).sum();  // sum of per-sample |y - A x0|
  if (extra) residual = residual + extra(pr.x0());
  auto g = torch::autograd::grad({residual}, {xg}, {}, false, false, true)[0];
  torch::AutoGradMode grad_off(false);
  const auto x0 = pr.x0().detach();
  auto step = p.ancestral_step(s, sn, eta);
  auto xn = r.renoise(ddim_step(p, Prediction::from_x0(x0, x, s, p), step.s_down), step);
  if (g.defined() && zeta > 0) xn = xn - g.detach() * (zeta / (p.model_scale(s) * p.model_scale(sn)));
  return {xn, x0};
}

namespace {

torch::Tensor dps(SamplerRun& r, const Measurement& m, torch::Tensor x, const MethodValues& o) {
  for (int i = 0; i < r.steps(); ++i) {
    GuidedStep st = dps_step(r, m, x, i, o.number("eta"), o.number("zeta"), "dps");
    x = st.x;
    r.report(i, x, st.x0);
  }
  return x;
}

RestoreSolverRegistrar reg(RestoreSolverInfo{"dps", "DDPM steps plus a gradient step on |y - A x0| through the denoiser (autograd); on "
                             "latent models through the decoder (latent DPS)",
                      "Chung et al. 2023, DPS", dps}
                               .option(restore_eta_option(1.0))
                               .option(restore_zeta_option())
                               .through_decoder());

}  // namespace
}  // namespace tweedie
