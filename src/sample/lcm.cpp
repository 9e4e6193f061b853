// LCM / multistep consistency sampling (Song, Dhariwal, Chen & Sutskever 2023,
// "Consistency Models", Alg. 1; Luo et al. 2023, "Latent Consistency Models";
// k-diffusion sample_lcm). At each level the model's clean estimate is taken
// and re-noised to the next level with fresh noise:
//   x0 = D(x, s),  x' = a(s') x0 + s' z   (Process::add_noise; x' = x0 at s' = 0).
// With a consistency function (the PF-ODE endpoint) every x0 is an exact
// sample and every x' has the exact marginal, at any number of steps. The
// consistency boundary condition (c_skip, c_out) belongs to the model; here
// the denoiser already returns x0.
// Verified (tests/test_ddpm_lcm_tcd.cpp): with an exact consistency function
// of the test mixture 3 steps reproduce its mean and covariance; tcd with
// gamma = 1 is lcm; the same seed gives the same bits.
#include "tweedie/sample/sampler.h"

namespace tweedie {
namespace {

torch::Tensor lcm(SamplerRun& r, torch::Tensor x) {
  const Process& p = r.process();
  for (int i = 0; i < r.steps(); ++i) {
    const double sn = r.sigmas[i + 1];
    Prediction pr = r.denoise(x, r.sigmas[i]);
    x = sn > 0 ? p.add_noise(pr.x0(), r.randn_like(x), sn) : pr.x0();
    r.report(i, x, pr.x0());
  }
  return x;
}

SamplerRegistrar reg(SamplerInfo{"lcm", "LCM / multistep consistency sampling: denoise, then fresh noise to the next level",
                      "Song et al. 2023, Consistency Models; Luo et al. 2023, LCM", lcm}.sde());

}  // namespace
}  // namespace tweedie
