// Tikhonov regularisation (Tikhonov 1963), a restoration baseline without a
// denoiser, with the regularisation weight from Morozov's discrepancy
// principle (Morozov 1966).
//
// x_lambda = argmin |A x - y|^2 + lambda |x|^2 = (A^T A + lambda I)^-1 A^T y
//          = V diag(s / (s^2 + lambda)) U^T y   (singular values <= cutoff dropped)
// in the operator's SVD (operator.h). Its residual, in the same basis,
//   R(lambda) = sum_kept (lambda / (s^2 + lambda))^2 (U^T y)^2 + sum_dropped (U^T y)^2,
// grows with lambda; the discrepancy principle picks, per sample, the lambda
// with R(lambda) = sigma_y^2 n (the expected |noise|^2, n = the number of
// measured coordinates: singular values > 0), by bisection on log lambda over
// [1e-16, 1e16]: lambda = 0 (A^+ y) when sigma_y = 0 or R(0) is already
// above the target, the upper end (x ~ 0) when |y|^2 is below it.
// Verified (tests/test_restore.cpp): x_lambda against the dense normal
// equations; lambda = 0 is A^+ y; the chosen lambda meets the discrepancy
// target; operators without an SVD are rejected.
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/restore/solver.h"

namespace tweedie {

namespace {
// U^T y split into the kept coordinates' values and singular values [N, M] / [M].
struct Spectral {
  torch::Tensor uty, s, kept;
};
Spectral spectral(const Operator& op, const torch::Tensor& y) {
  op.require_svd("tikhonov");
  auto y64 = y.to(torch::kFloat64);
  auto s = op.spectral_singulars().slice(0, 0, op.out_dim()).to(y64.device());
  return {op.Ut(y64), s, s > 0};
}
}  // namespace

torch::Tensor tikhonov(const Operator& op, const torch::Tensor& y, const torch::Tensor& lambda) {
  Spectral sp = spectral(op, y);
  auto lam = lambda.to(torch::kFloat64).reshape({-1, 1});
  check(lam.size(0) == y.size(0) && (lam >= 0).all().item<bool>(), "tikhonov: lambda must be >= 0, one per sample");
  auto coef = torch::where(sp.kept, sp.s / (sp.s * sp.s + lam), torch::zeros_like(lam));
  const int64_t N = y.size(0), pad = op.in_dim() - op.out_dim();
  return op.V(torch::cat({sp.uty * coef, torch::zeros({N, pad}, sp.uty.options())}, 1)).to(y.options());
}

torch::Tensor tikhonov_lambda(const Operator& op, const torch::Tensor& y, double sigma_y) {
  check(std::isfinite(sigma_y) && sigma_y >= 0, "tikhonov: sigma_y must be >= 0 (got ", sigma_y, ")");
  Spectral sp = spectral(op, y);
  const int64_t N = y.size(0);
  if (sigma_y == 0) return torch::zeros({N}, torch::kFloat64);
  const double target = sigma_y * sigma_y * double((op.singulars() > 0).sum().item<int64_t>());
  auto s2 = sp.s * sp.s, u2 = sp.uty * sp.uty;
  auto residual = [&](const torch::Tensor& lam) {  // [N] -> R(lambda) [N]
    auto l = lam.reshape({-1, 1});
    return torch::where(sp.kept, (l / (s2 + l)).pow(2) * u2, u2).sum(1);
  };
  auto lo = torch::full({N}, -16 * std::log(10.0), torch::kFloat64), hi = -lo.clone();
  for (int it = 0; it < 200; ++it) {
    auto mid = (lo + hi) / 2;
    auto above = residual(mid.exp()) > target;
    hi = torch::where(above, mid, hi);
    lo = torch::where(above, lo, mid);
  }
  auto lam = ((lo + hi) / 2).exp();
  return torch::where(residual(torch::zeros({N}, torch::kFloat64)) >= target, torch::zeros_like(lam), lam);
}

namespace {

torch::Tensor solve(SamplerRun&, const Measurement& m, torch::Tensor x, const MethodValues&) {
  return tikhonov(*m.op, m.y, tikhonov_lambda(*m.op, m.y, m.sigma_y)).to(x.options());
}

RestoreSolverRegistrar reg(RestoreSolverInfo{"tikhonov",
                                             "baseline: (A^T A + lambda I)^-1 A^T y, lambda by the discrepancy "
                                             "principle (SVD)",
                                             "Tikhonov 1963; Morozov 1966", solve}
                               .requires_svd()
                               .as_baseline());

}  // namespace
}  // namespace tweedie
