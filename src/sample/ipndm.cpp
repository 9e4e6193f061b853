// iPNDM and iPNDM-v: improved pseudo numerical methods (Zhang & Chen 2023,
// "Fast Sampling of Diffusion Models with Exponential Integrator" (DEIS), sec. on
// iPNDM; Zhou et al. 2024, diff-solvers; stable-diffusion.cpp "ipndm" /
// "ipndm_v", ComfyUI sample_ipndm / sample_ipndm_v).
//
// Both are Adams-Bashforth multistep methods on the PF-ODE derivative
// d_i = (x_i - x0_i)/s_i with h = s' - s, warming up with lower orders over the
// first three steps (each step uses min(i + 1, 4) derivatives):
//   ipndm:   x' = x + h (55 d_i - 59 d_{i-1} + 37 d_{i-2} - 9 d_{i-3}) / 24
//            (and the AB1..AB3 coefficients while warming up): the fixed,
//            equal-step coefficients whatever the step sizes.
//   ipndm-v: stable-diffusion.cpp's "ipndm_v": the second step uses the
//            variable-step AB2 coefficients (1 + h/(2 h1), -h/(2 h1)), h1 the
//            previous step; later steps the fixed AB3 and AB4 ones. It equals
//            ipndm on equal steps.
//            diff-solvers' (and ComfyUI's) closed form for orders 3 and 4 is not
//            variable-step Adams-Bashforth: its order-3 term groups
//            (1 - h/(3(h+h1)) * R)/2 for (1 - h/(3(h+h1)))/2 * R, its order-4 term
//            adds (1 - h/(2(h+h1))) h/(6(h+h1+h2)) where AB4 subtracts it, and its
//            last coefficient has h1/h2 for h2/h3 (the coefficients do not sum to
//            1 unless the steps are geometric; on equal steps it is not AB4), so it
//            is not used. Exact
//            variable-step AB4 on d is `lms`.
// The step to s' = 0 returns the denoised estimate x0 (as diff-solvers and
// ComfyUI do). Start at sigmas[0] (s = 1 on flow is fine).
// Order: fixed coefficients on unequal steps leave a local error O(h^3) (the
// mismatch between (s' - s) times the extrapolated mean of d and the integral
// of d), so both are second order on general schedules and fourth order only on
// schedules uniform in s.
// Verified: second order against the exact GMM PF-ODE on vp, edm and flow;
// equal to lms on equal steps and (ipndm-v) on two unequal steps; inversion
// round trips.
#include <deque>

#include "tweedie/sample/sampler.h"

namespace tweedie {
namespace {

// Adams-Bashforth combination of d (newest last) with coefficients c (newest first).
torch::Tensor combine(const std::deque<torch::Tensor>& d, const std::vector<double>& c) {
  auto out = d.back() * c[0];
  for (size_t j = 1; j < c.size(); ++j) out = out + d[d.size() - 1 - j] * c[j];
  return out;
}

// Fixed Adams-Bashforth coefficients of order q (1..4), newest first.
std::vector<double> ab_fixed(int q) {
  switch (q) {
    case 1: return {1.0};
    case 2: return {1.5, -0.5};
    case 3: return {23.0 / 12, -16.0 / 12, 5.0 / 12};
    default: return {55.0 / 24, -59.0 / 24, 37.0 / 24, -9.0 / 24};
  }
}

// stable-diffusion.cpp's ipndm_v coefficients: variable-step AB2 at order 2,
// h the current step and h1 the previous one; fixed otherwise.
std::vector<double> ab_sdcpp_v(int q, double h, double h1) {
  if (q != 2) return ab_fixed(q);
  return {1 + h / (2 * h1), -h / (2 * h1)};
}

torch::Tensor ipndm_impl(SamplerRun& r, torch::Tensor x, bool variable) {
  const Process& p = r.process();
  const int max_order = 4;
  std::deque<torch::Tensor> ds;  // newest last
  for (int i = 0; i < r.steps(); ++i) {
    const double s = r.sigmas[i], sn = r.sigmas[i + 1];
    Prediction pr = r.denoise(x, s);
    ds.push_back(p.ode_derivative(x, pr.x0(), s));
    if (static_cast<int>(ds.size()) > max_order) ds.pop_front();
    if (sn == 0) {
      x = pr.x0();
    } else {
      const int q = static_cast<int>(ds.size());
      const double h1 = i > 0 ? s - r.sigmas[i - 1] : 0.0;
      x = x + combine(ds, variable ? ab_sdcpp_v(q, sn - s, h1) : ab_fixed(q)) * (sn - s);
    }
    r.report(i, x, pr.x0());
  }
  return x;
}

torch::Tensor ipndm(SamplerRun& r, torch::Tensor x) { return ipndm_impl(r, std::move(x), false); }
torch::Tensor ipndm_v(SamplerRun& r, torch::Tensor x) { return ipndm_impl(r, std::move(x), true); }

SamplerRegistrar reg1(SamplerInfo{"ipndm", "Improved PNDM: fixed-coefficient Adams-Bashforth 4 on the PF-ODE derivative",
                       "Zhang & Chen 2023, DEIS (iPNDM)", ipndm}.ode(2));
SamplerRegistrar reg2(SamplerInfo{"ipndm-v", "iPNDM with a variable-step second step (stable-diffusion.cpp ipndm_v)",
                       "Zhou et al. 2024, diff-solvers (iPNDM_v); stable-diffusion.cpp", ipndm_v}.ode(2).alias("ipndm_v"));

}  // namespace
}  // namespace tweedie
