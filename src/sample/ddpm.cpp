// DDPM ancestral sampling (Ho, Jain & Abbeel 2020, "Denoising Diffusion
// Probabilistic Models", Alg. 2), for arbitrary (skipped) pairs of levels.
//
// VP form: x_t = sqrt(abar) x0 + sqrt(1 - abar) eps. A step t -> t' < t draws
//   x_t' = mu(x_t, x0) + sqrt(v) z,  mu = the mean of q(x_t' | x_t, x0),
// with x0 the denoiser's estimate and, writing beta = 1 - abar_t/abar_t' for
// the skipped step (diffusers DDPMScheduler with custom timesteps),
//   "ddpm":       v = (1 - abar_t')/(1 - abar_t) beta   (posterior variance, "fixed_small")
//   "ddpm-large": v = beta                               (Ho et al.'s sigma_t^2 = beta_t, "fixed_large").
// Dividing by alpha gives the VE form X = x_t / sqrt(abar) = x0 + sigma eps,
// sigma^2 = (1 - abar)/abar. There, with r = sigma'/sigma,
//   X' = x0 + r^2 (X - x0) + sqrt(V) z = x0 + (sigma'^2 / sigma) eps + sqrt(V) z,
//   V_small = sigma'^2 (1 - r^2),
//   V_large = beta / abar' = (1 - r^2) (1 + sigma'^2) / (1 + 1/sigma^2).
// Only the VE noise level sigma = exp(-lambda(s)) enters, so the step is
// defined for every process: the VE state of a sampling-space state is
// x / a(s), and x' = a(s') X' (for flow at s = 1, sigma = inf and r = 0, so
// the first step is x0-conditioned fresh noise). "large" uses, for each level,
// the VP process with the same log-SNR (abar = 1/(1 + sigma^2)), i.e. the
// variance Ho et al. would use there. The last step (s' = 0) returns x0 with no
// noise (Alg. 2: z = 0 at t = 1). The small variance is the exact posterior,
// so "ddpm" is DDIM with eta = 1 (Process::ancestral_step) by another route.
// Fresh noise is scaled by --s-noise.
// Verified (tests/test_ddpm_lcm_tcd.cpp): ddpm == ddim --eta 1 with the same
// generator to 1e-12 in float64 on vp, vp+ztsnr, edm and flow; one step has
// the variance beta-tilde resp. beta; both reproduce the test mixture's mean
// and covariance at 50 Karras steps, and at 5 steps the small variance
// under-disperses and the large one over-disperses; the same seed gives the
// same bits.
#include <cmath>

#include "tweedie/sample/sampler.h"

namespace tweedie {
namespace {

torch::Tensor ddpm_run(SamplerRun& r, torch::Tensor x, bool large) {
  const Process& p = r.process();
  for (int i = 0; i < r.steps(); ++i) {
    const double s = r.sigmas[i], sn = r.sigmas[i + 1];
    Prediction pr = r.denoise(x, s);
    if (sn == 0) {
      x = pr.x0();
    } else {
      const double sig = std::exp(-p.lambda(s)), sig_n = std::exp(-p.lambda(sn)), rr = sig_n / sig;
      const double var = large ? (1 - rr * rr) * (1 + sig_n * sig_n) / (1 + 1 / (sig * sig))
                               : sig_n * sig_n * (1 - rr * rr);
      x = (pr.x0() + pr.eps() * (sig_n * rr)) * p.a(sn) +
          r.randn_like(x) * (p.a(sn) * std::sqrt(std::max(0.0, var)) * r.opt.s_noise);
    }
    r.report(i, x, pr.x0());
  }
  return x;
}

torch::Tensor ddpm(SamplerRun& r, torch::Tensor x) { return ddpm_run(r, std::move(x), false); }
torch::Tensor ddpm_large(SamplerRun& r, torch::Tensor x) { return ddpm_run(r, std::move(x), true); }

SamplerRegistrar reg1(SamplerInfo{"ddpm", "DDPM ancestral sampling, posterior variance (beta-tilde); = ddim --eta 1",
                       "Ho et al. 2020, DDPM", ddpm}.sde());
SamplerRegistrar reg2(SamplerInfo{"ddpm-large", "DDPM ancestral sampling with the large variance sigma^2 = beta",
                       "Ho et al. 2020, DDPM", ddpm_large}.sde().alias("ddpm_large"));

}  // namespace
}  // namespace tweedie
