// DEIS (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with
// Exponential Integrator"), multistep "tAB" in log-rho time, order 3
// (diffusers DEISMultistepScheduler, algorithm_type "deis", solver_order 3).
//
// In eps form the PF-ODE is exact in x / a against rho = s / a = e^{-lambda}:
// d(x/a) = eps d rho. tAB fits a Lagrange polynomial P(v) through the last
// k eps predictions at v_j = lambda_j - lambda (v_0 = 0) and integrates it
// exactly: with h = lambda' - lambda,
//   x' = (a'/a) x - s' int_0^h e^{h - v} P(v) dv
//      = a' x0 + s' eps - s' sum_{j>=1} c_j (eps_j - eps),
//   c_j = int_0^h e^{h - v} l_j(v) dv = sum_k [l_j]_k I_k,
//   I_0 = e^h - 1,  I_k = k I_{k-1} - h^k,
// the first term being the DDIM step (diffusers' ind_fn closed forms are the
// same integrals in rho). The order warms up 1, 2, 3; history points at
// lambda = -inf (flow s = 1) are dropped, and a step with infinite h (from
// flow s = 1, or to s = 0, which gives x0) is the first-order step.
// Verified: third order against the exact Gaussian-mixture PF-ODE
// (test_order.cpp) and inversion round trips (test_exponential_integrators.cpp).
#include <cmath>
#include <deque>

#include "tweedie/sample/sampler.h"

namespace tweedie {
namespace {

constexpr size_t kOrder = 3;

// c_j for the nodes v (v[0] = 0) over a step of length h, j = 1..v.size()-1.
std::vector<double> tab_coefficients(const std::vector<double>& v, double h) {
  const size_t n = v.size();
  std::vector<double> I(n);
  I[0] = std::expm1(h);
  for (size_t k = 1; k < n; ++k) I[k] = k * I[k - 1] - std::pow(h, k);
  std::vector<double> c;
  for (size_t j = 1; j < n; ++j) {
    std::vector<double> poly = {1.0};  // coefficients of prod_{m != j} (v - v_m) / (v_j - v_m), low first
    for (size_t m = 0; m < n; ++m) {
      if (m == j) continue;
      std::vector<double> next(poly.size() + 1, 0.0);
      for (size_t k = 0; k < poly.size(); ++k) {
        next[k + 1] += poly[k] / (v[j] - v[m]);
        next[k] -= poly[k] * v[m] / (v[j] - v[m]);
      }
      poly = next;
    }
    double cj = 0;
    for (size_t k = 0; k < n; ++k) cj += poly[k] * I[k];
    c.push_back(cj);
  }
  return c;
}

torch::Tensor deis(SamplerRun& r, torch::Tensor x) {
  const Process& p = r.process();
  std::deque<std::pair<torch::Tensor, double>> hist;  // (eps, lambda), newest first, finite lambda only
  for (int i = 0; i < r.steps(); ++i) {
    const double s = r.sigmas[i], sn = r.sigmas[i + 1], l = p.lambda(s), h = p.lambda(sn) - l;
    Prediction pr = r.denoise(x, s);
    x = pr.x0() * p.a(sn) + pr.eps() * sn;
    if (std::isfinite(h) && !hist.empty()) {
      std::vector<double> v = {0.0};
      for (auto& e : hist) v.push_back(e.second - l);
      auto c = tab_coefficients(v, h);
      for (size_t j = 0; j < c.size(); ++j) x = x - (hist[j].first - pr.eps()) * (sn * c[j]);
    }
    if (!std::isfinite(l))
      hist.clear();
    else
      hist.emplace_front(pr.eps(), l);
    if (hist.size() >= kOrder) hist.pop_back();
    r.report(i, x, pr.x0());
  }
  return x;
}

SamplerRegistrar reg(SamplerInfo{"deis", "DEIS tAB-3 multistep in log-rho (1 NFE per step)",
                      "Zhang & Chen 2023, DEIS; diffusers DEISMultistepScheduler", deis}.ode(3));

}  // namespace
}  // namespace tweedie
