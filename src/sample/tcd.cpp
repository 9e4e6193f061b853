// TCD (Zheng, He, Luo, Li & Zhang 2024, "Trajectory Consistency Distillation";
// diffusers TCDScheduler.step with eta = gamma). Strategic stochastic sampling:
// from level s, move deterministically (DDIM, the first-order exponential
// integrator) to an intermediate level s_mid <= s', then re-noise forward to
// s' with fresh noise:
//   x0, eps = D(x, s);  x_mid = a(s_mid) x0 + s_mid eps;
//   x' = (a(s')/a(s_mid)) x_mid + a(s') sqrt(sigma'^2 - sigma_mid^2) z,
// sigma = exp(-lambda) the VE level (the exact forward transition s_mid -> s').
// gamma = --gamma (default 0.3) sets s_mid. diffusers: timestep
// t_mid = floor((1 - gamma) t') on the 0-based training timesteps. Here a level
// is placed on the process's training timesteps by its index
//   k(s) = (t_of(s) - t_of(s_min)) / (t_of(s_max) - t_of(s_min)) (N - 1)
// (the table index on discrete VP; uniform model time on the others), and
//   s_mid = s_at_timestep((1 - gamma) k(s')),
// floored (in float64) when k(s') is a training timestep, as in diffusers, and
// kept fractional otherwise so that gamma = 0 gives s_mid = s' (deterministic
// DDIM) on any schedule; s_mid is clamped to at most s'. Two deliberate
// differences from diffusers: the last step (s' = 0) returns x0 (diffusers
// stops at timestep 0, which still carries sigma = 0.029 of noise), and
// gamma = 1 puts s_mid at 0 (data) rather than at timestep 0, which makes
// gamma = 1 exactly multistep consistency sampling (lcm), as the paper states.
// TCD is exact when the model is a trajectory consistency function (its DDIM
// step lands on the PF-ODE solution at s_mid). With a posterior-mean denoiser
// 0 < gamma < 1 under-disperses at any step count, since every step is a
// finite DDIM jump by the factor (1 - gamma).
// Verified (tests/test_ddpm_lcm_tcd.cpp): gamma = 0 equals DDIM; gamma = 1
// equals lcm; s_mid follows diffusers on training timesteps; with an exact
// trajectory consistency function of the test mixture gamma = 0.3 and 0.7
// reproduce its mean and covariance in 4 steps; the same seed gives the same
// bits.
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/sample/sampler.h"

namespace tweedie {
namespace {

double mid_level(const Process& p, double sn, double gamma) {
  if (sn == 0 || gamma >= 1) return 0;
  if (gamma <= 0) return sn;
  const double t0 = p.t_of(p.s_min()), t1 = p.t_of(p.s_max());
  double k = (p.t_of(sn) - t0) / (t1 - t0) * (p.timesteps() - 1), m = (1 - gamma) * k;
  if (std::abs(k - std::round(k)) < 1e-6) k = std::round(k), m = std::floor((1 - gamma) * k + 1e-9);
  return std::min(p.s_at_timestep(std::max(0.0, m)), sn);
}

torch::Tensor tcd(SamplerRun& r, torch::Tensor x) {
  const Process& p = r.process();
  const double gamma = r.values.number("gamma");
  for (int i = 0; i < r.steps(); ++i) {
    const double s = r.sigmas[i], sn = r.sigmas[i + 1];
    Prediction pr = r.denoise(x, s);
    const double sm = mid_level(p, sn, gamma);
    x = pr.x0() * p.a(sm) + pr.eps() * sm;
    if (sn > sm) {
      const double vm = std::exp(-p.lambda(sm)), vn = std::exp(-p.lambda(sn));
      x = x * (p.a(sn) / p.a(sm)) + r.randn_like(x) * (p.a(sn) * std::sqrt(std::max(0.0, vn * vn - vm * vm)));
    }
    r.report(i, x, pr.x0());
  }
  return x;
}

SamplerRegistrar reg(SamplerInfo{"tcd", "TCD: DDIM to timestep (1 - gamma) t', then fresh noise up to t' (--gamma, default 0.3)",
                      "Zheng et al. 2024, Trajectory Consistency Distillation", tcd}
                         .sde()
                         .option(MethodOption{"gamma", 0.3,
                                              "TCD gamma: the share of each step taken back by fresh noise (0 = DDIM)"}
                                     .in(0, 1)));

}  // namespace
}  // namespace tweedie
