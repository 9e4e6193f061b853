// DPM-Solver, singlestep (Lu et al. 2022, "DPM-Solver: A Fast ODE Solver for
// Diffusion Probabilistic Model Sampling in Around 10 Steps", Algorithms 1-2,
// noise prediction) and DPM-Solver++(2S) (Lu et al. 2022b, "DPM-Solver++",
// data prediction; k-diffusion sample_dpmpp_2s_ancestral).
//
// In sampling space (alpha = a(s), sigma = s, lambda = log(a/s), h = lambda' -
// lambda) every step starts from the first-order (DDIM) step
//     x' = a(s') x0 + s' eps     (= (a'/a) x - s' (e^h - 1) eps)
// and the higher orders add corrections from intermediate points placed at
// lambda + r h:
//   dpm-solver-2 (r1 = 1/2):  x' = DDIM - s' (e^h - 1) (eps(u1) - eps)
//   dpm-solver-3 (r1 = 1/3, r2 = 2/3):
//     u2 = DDIM(s2) - s2 (r2/r1) ((e^{r2 h} - 1)/(r2 h) - 1) (eps(u1) - eps)
//     x' = DDIM - (s'/r2) ((e^h - 1)/h - 1) (eps(u2) - eps)
//   dpmpp-2s (r = 1/2):        x' = DDIM + a' (1 - e^{-h}) (x0(u1) - x0)
// where u1 is the DDIM step to the first intermediate level. dpmpp-2s-a takes
// the 2S step to the ancestral level s_down and adds fresh noise (eta,
// default 1). A step whose h is infinite (from flow s = 1, or to s = 0) is
// the first-order step, with one NFE: that is its exact limit at s' = 0 and
// the only finite one at a(s) = 0. The steps are explicit in the direction of
// h, so the deterministic ones also invert (increasing levels, h < 0).
// Verified: order 1/2/3/2 against the exact Gaussian-mixture PF-ODE
// (test_order.cpp); dpm-solver-1 equals DDIM bit for bit, inversion round
// trips and the 2s-a sample moments (test_exponential_integrators.cpp).
#include <cmath>

#include "tweedie/sample/sampler.h"

namespace tweedie {
namespace {


// One DPM-Solver-k step (noise prediction) from s to sn.
torch::Tensor dpm_solver_step(SamplerRun& r, const Prediction& pr, double s, double sn, int k) {
  const Process& p = r.process();
  const double l = p.lambda(s), h = p.lambda(sn) - l;
  auto x1 = ddim_step(p, pr, sn);
  if (k == 1 || !std::isfinite(h)) return x1;
  if (k == 2) {
    const double s1 = p.s_of_lambda(l + h / 2);
    Prediction p1 = r.denoise(ddim_step(p, pr, s1), s1);
    return x1 - (p1.eps() - pr.eps()) * (sn * std::expm1(h));
  }
  const double r1 = 1.0 / 3, r2 = 2.0 / 3, s1 = p.s_of_lambda(l + r1 * h), s2 = p.s_of_lambda(l + r2 * h);
  Prediction p1 = r.denoise(ddim_step(p, pr, s1), s1);
  auto u2 = ddim_step(p, pr, s2) - (p1.eps() - pr.eps()) * (s2 * r2 / r1 * (std::expm1(r2 * h) / (r2 * h) - 1));
  Prediction p2 = r.denoise(u2, s2);
  return x1 - (p2.eps() - pr.eps()) * (sn / r2 * (std::expm1(h) / h - 1));
}

template <int K>
torch::Tensor dpm_solver(SamplerRun& r, torch::Tensor x) {
  for (int i = 0; i < r.steps(); ++i) {
    Prediction pr = r.denoise(x, r.sigmas[i]);
    x = dpm_solver_step(r, pr, r.sigmas[i], r.sigmas[i + 1], K);
    r.report(i, x, pr.x0());
  }
  return x;
}

// DPM-Solver++(2S) from s to sn, then (eta > 0) ancestral noise.
torch::Tensor dpmpp_2s_with_eta(SamplerRun& r, torch::Tensor x, double eta) {
  const Process& p = r.process();
  for (int i = 0; i < r.steps(); ++i) {
    const double s = r.sigmas[i], sn = r.sigmas[i + 1];
    Prediction pr = r.denoise(x, s);
    auto st = p.ancestral_step(s, sn, eta);
    const double l = p.lambda(s), h = p.lambda(st.s_down) - l;
    auto x_next = ddim_step(p, pr, st.s_down);
    if (std::isfinite(h)) {
      const double s1 = p.s_of_lambda(l + h / 2);
      Prediction p1 = r.denoise(ddim_step(p, pr, s1), s1);
      x_next = x_next + (p1.x0() - pr.x0()) * (-p.a(st.s_down) * std::expm1(-h));
    }
    x = r.renoise(x_next, st);
    r.report(i, x, pr.x0());
  }
  return x;
}

torch::Tensor dpmpp_2s(SamplerRun& r, torch::Tensor x) { return dpmpp_2s_with_eta(r, std::move(x), 0.0); }
torch::Tensor dpmpp_2s_a(SamplerRun& r, torch::Tensor x) {
  return dpmpp_2s_with_eta(r, std::move(x), r.opt.eta_or(1.0));
}

SamplerRegistrar reg1(SamplerInfo{"dpm-solver-1", "DPM-Solver-1 (noise prediction; the same step as DDIM)",
                       "Lu et al. 2022, DPM-Solver", dpm_solver<1>}.ode(1));
SamplerRegistrar reg2(SamplerInfo{"dpm-solver-2", "DPM-Solver-2 singlestep, lambda midpoint (2 NFE per step)",
                       "Lu et al. 2022, DPM-Solver, Alg. 1", dpm_solver<2>}.ode(2).alias("dpm_solver_2"));
SamplerRegistrar reg3(SamplerInfo{"dpm-solver-3", "DPM-Solver-3 singlestep, r1 = 1/3, r2 = 2/3 (3 NFE per step)",
                       "Lu et al. 2022, DPM-Solver, Alg. 2", dpm_solver<3>}.ode(3).alias("dpm_solver_3"));
SamplerRegistrar reg4(SamplerInfo{"dpmpp-2s", "DPM-Solver++(2S) singlestep, data prediction (2 NFE per step)",
                       "Lu et al. 2022b, DPM-Solver++, Alg. 1", dpmpp_2s}.ode(2).alias("dpmpp_2s"));
SamplerRegistrar reg5(SamplerInfo{"dpmpp-2s-a", "DPM-Solver++(2S) ancestral: 2S to sigma_down, then noise (--eta, default 1)",
                       "k-diffusion sample_dpmpp_2s_ancestral", dpmpp_2s_a}.sde().alias("dpmpp_2s_ancestral").alias("dpm++2s_a"));

}  // namespace
}  // namespace tweedie
