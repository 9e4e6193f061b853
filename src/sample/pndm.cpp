// PNDM and PLMS: pseudo numerical methods on the noise estimate (Liu et al.
// 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds"; diffusers
// PNDMScheduler; the PLMSSampler of the latent-diffusion repository).
//
// Both combine noise estimates e and move with the DDIM-type "transfer" of the
// paper (its eq. 9), which in sampling space is the DDIM update
//   phi(x, e, s -> s') = a(s') x0 + s' e,   x0 = the clean estimate implied by e at (x, s).
// pndm: three pseudo-Runge-Kutta-4 steps (4 NFE each, s_m = sqrt(s s') the
//       log-midpoint; the original uses the timestep midpoint)
//         e1 = eps(x, s),              e2 = eps(phi(x, e1, s -> s_m), s_m),
//         e3 = eps(phi(x, e2, s -> s_m), s_m),  e4 = eps(phi(x, e3, s -> s'), s'),
//         x' = phi(x, (e1 + 2 e2 + 2 e3 + e4)/6, s -> s'),
//       then the pseudo linear multistep (PLMS) step with the e1's as history:
//         x' = phi(x, (55 e_i - 59 e_{i-1} + 37 e_{i-2} - 9 e_{i-3})/24, s -> s').
// plms: the same multistep from the first step, warming up with a pseudo
//       improved-Euler step (e' = (e(x, s) + e(phi(x, e, s -> s'), s'))/2, 2 NFE)
//       and then the 2- and 3-step Adams-Bashforth combinations.
// A step to s' = 0 never evaluates the model at 0: it takes the multistep
// combination of the history it has (phi to 0 returns the implied x0). At the
// flow limit a(s) = 0 (s = 1) the implied x0 of any e other than the model's own
// is undefined, so a step from there is the plain DDIM step (the only member of
// the family defined there) and the history starts with its e.
// Orders: the fixed Adams-Bashforth coefficients are exact for steps uniform in
// the VE level s/a, where the transfer is an Euler step; on other schedules the
// mismatch leaves a local error O(h^3), so both are second order in general.
// Verified: measured orders against the exact GMM PF-ODE on vp, edm and flow;
// inversion round trips; finite from flow s = 1.
#include <cmath>
#include <deque>

#include "tweedie/sample/sampler.h"

namespace tweedie {
namespace {

// The transfer phi(x, e, s -> sn); a(s) > 0.
torch::Tensor transfer(const Process& p, const torch::Tensor& x, const torch::Tensor& e, double s, double sn) {
  return Prediction({PredKind::Eps}, e, x, s, p).x0() * p.a(sn) + e * sn;
}

// Adams-Bashforth combination of the noise history (newest last, 1..4 entries).
torch::Tensor plms_eps(const std::deque<torch::Tensor>& e) {
  const size_t n = e.size();
  if (n == 1) return e[0];
  if (n == 2) return (e[1] * 3 - e[0]) / 2;
  if (n == 3) return (e[2] * 23 - e[1] * 16 + e[0] * 5) / 12;
  return (e[3] * 55 - e[2] * 59 + e[1] * 37 - e[0] * 9) / 24;
}

// Pseudo Runge-Kutta 4 step of PNDM, given e1 = eps(x, s).
torch::Tensor prk_step(SamplerRun& r, const torch::Tensor& x, const torch::Tensor& e1, double s, double sn) {
  const Process& p = r.process();
  const double sm = std::sqrt(s * sn);
  auto e2 = r.denoise(transfer(p, x, e1, s, sm), sm).eps();
  auto e3 = r.denoise(transfer(p, x, e2, s, sm), sm).eps();
  auto e4 = r.denoise(transfer(p, x, e3, s, sn), sn).eps();
  return transfer(p, x, (e1 + e2 * 2 + e3 * 2 + e4) / 6, s, sn);
}

// Pseudo improved Euler step of PLMS, given e1 = eps(x, s).
torch::Tensor pie_step(SamplerRun& r, const torch::Tensor& x, const torch::Tensor& e1, double s, double sn) {
  const Process& p = r.process();
  auto e2 = r.denoise(transfer(p, x, e1, s, sn), sn).eps();
  return transfer(p, x, (e1 + e2) / 2, s, sn);
}

torch::Tensor pseudo_multistep(SamplerRun& r, torch::Tensor x, bool runge_kutta) {
  const Process& p = r.process();
  std::deque<torch::Tensor> hist;  // noise estimates at the last levels, newest last
  for (int i = 0; i < r.steps(); ++i) {
    const double s = r.sigmas[i], sn = r.sigmas[i + 1];
    Prediction pr = r.denoise(x, s);
    hist.push_back(pr.eps());
    if (hist.size() > 4) hist.pop_front();
    if (p.a(s) == 0)
      x = pr.x0() * p.a(sn) + pr.eps() * sn;
    else if (sn > 0 && runge_kutta && i < 3)
      x = prk_step(r, x, pr.eps(), s, sn);
    else if (sn > 0 && !runge_kutta && hist.size() == 1)
      x = pie_step(r, x, pr.eps(), s, sn);
    else
      x = transfer(p, x, plms_eps(hist), s, sn);
    r.report(i, x, pr.x0());
  }
  return x;
}

torch::Tensor pndm(SamplerRun& r, torch::Tensor x) { return pseudo_multistep(r, std::move(x), true); }
torch::Tensor plms(SamplerRun& r, torch::Tensor x) { return pseudo_multistep(r, std::move(x), false); }

SamplerRegistrar reg1(SamplerInfo{"pndm", "PNDM: 3 pseudo Runge-Kutta warm-up steps (4 NFE each), then PLMS on eps",
                       "Liu et al. 2022, PNDM; diffusers PNDMScheduler", pndm}.ode(2));
SamplerRegistrar reg2(SamplerInfo{"plms", "PLMS: pseudo linear multistep on eps, improved-Euler first step (LDM PLMSSampler)",
                       "Liu et al. 2022, PNDM; latent-diffusion PLMSSampler", plms}.ode(2));

}  // namespace
}  // namespace tweedie
