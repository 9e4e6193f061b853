// RES multistep (Zhang, Tao & Chen 2023, "Improved Order Analysis and Design
// of Exponential Integrator for Diffusion Models Sampling"; ComfyUI
// sample_res_multistep), second order, data prediction.
//
// The data term of the exponential integrator is integrated exactly against
// the line through the current and previous predictions D, D_1 (in lambda):
// with h = lambda' - lambda, c2 = (lambda_1 - lambda) / h (< 0 going forward),
// phi1(z) = (e^z - 1)/z and phi2(z) = (phi1(z) - 1)/z,
//   x' = (s'/s) x + a' h (b1 D + b2 D_1),  b2 = phi2(-h) / c2,  b1 = phi1(-h) - b2,
// which satisfies the second-order condition b2 c2 = phi2 exactly (the RES
// order condition) rather than to leading order as DPM-Solver++(2M) does.
// The first step, a step whose previous lambda is -inf (flow s = 1), and a
// step with infinite h (from flow s = 1, or to s = 0, giving D) are the
// first-order step x' = a' D + s' eps (k-diffusion's Euler step in sigma space).
// Verified: second order against the exact Gaussian-mixture PF-ODE
// (test_order.cpp) and inversion round trips (test_exponential_integrators.cpp).
#include <cmath>

#include "tweedie/sample/sampler.h"

namespace tweedie {
namespace {

double phi1(double z) { return std::expm1(z) / z; }
double phi2(double z) { return (phi1(z) - 1) / z; }

torch::Tensor res_multistep(SamplerRun& r, torch::Tensor x) {
  const Process& p = r.process();
  torch::Tensor old;
  double l_old = -INFINITY;
  for (int i = 0; i < r.steps(); ++i) {
    const double s = r.sigmas[i], sn = r.sigmas[i + 1], l = p.lambda(s), h = p.lambda(sn) - l;
    Prediction pr = r.denoise(x, s);
    if (old.defined() && std::isfinite(h) && std::isfinite(l_old)) {
      const double c2 = (l_old - l) / h, b2 = phi2(-h) / c2, b1 = phi1(-h) - b2;
      x = x * (sn / s) + (pr.x0() * b1 + old * b2) * (p.a(sn) * h);
    } else {
      x = pr.x0() * p.a(sn) + pr.eps() * sn;
    }
    old = pr.x0(), l_old = l;
    r.report(i, x, pr.x0());
  }
  return x;
}

SamplerRegistrar reg(SamplerInfo{"res-multistep", "RES second-order multistep exponential integrator (1 NFE per step)",
                      "Zhang et al. 2023, RES; ComfyUI sample_res_multistep", res_multistep}.ode(2).alias("res_multistep"));

}  // namespace
}  // namespace tweedie
