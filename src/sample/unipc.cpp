// UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework
// for Fast Sampling of Diffusion Models"), data prediction, B(h) = h (bh1) or
// e^h - 1 (bh2); diffusers UniPCMultistepScheduler with solver_order = 2.
//
// In sampling space (alpha = a(s), sigma = s, lambda = log(a/s)), from the
// point s0 with state x and prediction m0 to s' (h = lambda' - lambda0):
//   UniP-p:  x' = (s'/s0) x - a' (e^{-h} - 1) m0 - a' B(h) sum_k rho_k D_k,
//            D_k = (m_k - m0) / r_k,  r_k = (lambda_k - lambda0) / h over the
//            p-1 previous points, rho = R^-1 b (rho = 1/2 for p = 2)
//   UniC-p:  the same update from the same x, with the model output m' at the
//            predicted x' joining as the point r = 1 (rho = 1/2 for p = 1).
// The corrected state replaces x' and m' is reused by the next predictor,
// so one NFE per step; no corrector after the last step. UniC raises the
// order of UniP-p by one, so the default is third order. The order warms up from
// 1, history points at lambda = -inf (flow s = 1) are dropped, a step with
// infinite h (from flow s = 1, or to s = 0, which gives x' = m0) is first
// order and is not corrected. Inversion runs the same explicit
// predictor-corrector on increasing levels (h < 0).
// Verified: third-order convergence against the exact Gaussian-mixture PF-ODE
// (test_order.cpp) and inversion round trips (test_exponential_integrators.cpp).
#include <cmath>
#include <deque>

#include <torch/linalg.h>

#include "tweedie/sample/sampler.h"

namespace tweedie {
namespace {

constexpr size_t kOrder = 2;

enum class Variant { BH1, BH2 };

struct Point {
  torch::Tensor m;  // x0 prediction
  double l;         // lambda
};

// One UniP (m_new undefined) or UniC (m_new = output at the predicted point)
// update from x at hist[0] to level sn, using the order-1 points hist[1..].
torch::Tensor unipc_update(const Process& p, Variant v, const torch::Tensor& x, double s0, double sn,
                           const std::deque<Point>& hist, int order, const torch::Tensor& m_new) {
  const torch::Tensor& m0 = hist[0].m;
  const double h = p.lambda(sn) - hist[0].l, hh = -h;
  const double h_phi_1 = std::expm1(hh), B = v == Variant::BH1 ? hh : std::expm1(hh);
  auto x_t = x * (sn / s0) - m0 * (p.a(sn) * h_phi_1);
  const bool corrector = m_new.defined();
  if (!corrector && order == 1) return x_t;
  // rks and D1s of the older points, then (corrector) the new point at r = 1.
  std::vector<double> rks;
  std::vector<torch::Tensor> D;
  for (int k = 1; k < order; ++k) {
    rks.push_back((hist[k].l - hist[0].l) / h);
    D.push_back((hist[k].m - m0) / rks.back());
  }
  if (corrector) rks.push_back(1.0), D.push_back(m_new - m0);
  const int n = static_cast<int>(rks.size());
  std::vector<double> rho;
  if ((!corrector && order == 2) || (corrector && order == 1)) {
    rho = {0.5};
  } else {
    // Solve R rho = b: R[i][k] = r_k^i, b_i = (i+1)! h phi_{i+2}(h) / B(h) by diffusers' recursion.
    std::vector<double> R(n * n), b(n);
    double h_phi_k = h_phi_1 / hh - 1, fact = 1;
    for (int i = 0; i < n; ++i) {
      for (int k = 0; k < n; ++k) R[i * n + k] = std::pow(rks[k], i);
      b[i] = h_phi_k * fact / B;
      fact *= i + 2;
      h_phi_k = h_phi_k / hh - 1 / fact;
    }
    auto sol =
        torch::linalg::solve(torch::tensor(R, torch::kFloat64).view({n, n}), torch::tensor(b, torch::kFloat64), true);
    for (int k = 0; k < n; ++k) rho.push_back(sol[k].item<double>());
  }
  torch::Tensor res = D[0] * rho[0];
  for (int k = 1; k < n; ++k) res = res + D[k] * rho[k];
  return x_t - res * (p.a(sn) * B);
}

template <Variant V>
torch::Tensor unipc(SamplerRun& r, torch::Tensor x) {
  const Process& p = r.process();
  std::deque<Point> hist;  // newest first, finite lambda only
  torch::Tensor x_last;    // state the last predictor started from
  int last_order = 0;
  for (int i = 0; i < r.steps(); ++i) {
    const double s = r.sigmas[i], sn = r.sigmas[i + 1], l = p.lambda(s);
    Prediction pr = r.denoise(x, s);
    if (last_order > 0 && std::isfinite(l))
      x = unipc_update(p, V, x_last, r.sigmas[i - 1], s, hist, last_order, pr.x0());
    if (!std::isfinite(l))
      hist.clear();
    else
      hist.push_front({pr.x0(), l});
    if (hist.size() > kOrder) hist.pop_back();
    x_last = x;
    const bool first_order = hist.empty() || !std::isfinite(p.lambda(sn));
    if (first_order) {
      x = x * (sn / s) - pr.x0() * (p.a(sn) * std::expm1(l - p.lambda(sn)));
      last_order = 0;
    } else {
      last_order = static_cast<int>(hist.size());
      x = unipc_update(p, V, x, s, sn, hist, last_order, {});
    }
    r.report(i, x, pr.x0());
  }
  return x;
}

SamplerRegistrar reg1(SamplerInfo{"unipc-bh1", "UniPC: UniP-2 predictor + UniC corrector, B(h) = h (1 NFE per step)",
                       "Zhao et al. 2023, UniPC; diffusers UniPCMultistepScheduler", unipc<Variant::BH1>}.ode(3).alias("uni_pc"));
SamplerRegistrar reg2(SamplerInfo{"unipc-bh2", "UniPC: UniP-2 predictor + UniC corrector, B(h) = e^h - 1 (1 NFE per step)",
                       "Zhao et al. 2023, UniPC; diffusers UniPCMultistepScheduler", unipc<Variant::BH2>}.ode(3).alias("unipc").alias("uni_pc_bh2"));

}  // namespace
}  // namespace tweedie
