// DDRM (Kawar, Elad, Ermon & Song 2022, "Denoising Diffusion Restoration
// Models", NeurIPS; Eq. 7-8 and the authors' efficient_generalized_steps).
//
// Works in the spectral basis of A = U S V^T (operator.h): x-bar = V^T x,
// y-bar_i = (U^T y)_i / s_i on the measured coordinates (s_i > cutoff), whose
// noise has VE standard deviation r_i = sigma_y / s_i. In VE terms (state
// X = x0 + sigma eps, sigma = exp(-lambda(s))), with x0-bar = V^T D(x, s),
// eps-bar = V^T eps, z ~ N(0, I) and sigma' the next level:
//   null space (s_i = 0):   X'_i = x0_i + sigma' (sqrt(1 - eta^2) eps_i + eta z_i)
//   sigma' <  r_i (the state is less noisy than y):
//                           X'_i = x0_i + sigma' (sqrt(1 - eta^2) (y_i - x0_i) / r_i + eta z_i)
//   sigma' >= r_i (noisier): X'_i = (1 - eta_b) x0_i + eta_b y_i + sqrt(sigma'^2 - eta_b^2 r_i^2) z_i
// and back to sampling space by x' = a(s') X' (Process::add_noise). The start
// state is DDRM's p(x_T | y): measured coordinates with sigma_T >= r_i are
// centred on y_i with variance sigma_T^2 - r_i^2; the rest keep the given
// noise. With sigma_y = 0 every measured coordinate is in the last case, so
// eta_b = 1 gives A x = y exactly at s' = 0. Defaults eta = 0.85, eta_b = 1
// (the paper's). An operator without an SVD is rejected (run_restore).
// Verified (tests/test_restore.cpp): |A x - y| ~ 0 for noiseless y on every
// operator; on a Gaussian prior with a noiseless mask the mean of 4000 runs
// is the closed-form posterior mean within Monte-Carlo error, and with noise
// (an approximation: the unconditional denoiser stands in for the
// conditional one) it leaves under 2 % of the prior-to-posterior distance;
// it equals DDNM+ without time travel on masks and A = I; operators without
// an SVD are rejected with an error naming them.
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/restore/solver.h"

namespace tweedie {
namespace {

torch::Tensor ddrm(SamplerRun& r, const Measurement& m, torch::Tensor x, const MethodValues& o) {
  const Process& p = r.process();
  const Operator& A = *m.op;
  A.require_svd("ddrm");
  const double eta = o.number("eta"), eta_b = o.number("eta-b"), keep = std::sqrt(1 - eta * eta);
  const int64_t N = x.size(0), D = A.in_dim(), M = A.out_dim();
  auto S = A.spectral_singulars().to(x.options());  // [D]
  auto obs = S > 0;
  auto safe = torch::where(obs, S, torch::ones_like(S));
  auto uty = torch::cat({A.Ut(m.y.to(x.options())), torch::zeros({N, D - M}, x.options())}, 1);
  auto ybar = torch::where(obs, uty / safe, torch::zeros_like(uty));   // [N, D]
  auto rstd = torch::where(obs, m.sigma_y / safe, torch::zeros_like(S)); // [D]
  // The VE ratio r_i / sigma (inf where sigma = 0 and r_i > 0; 0 where r_i = 0).
  auto ratio_at = [&](double vs) {
    return vs > 0 ? rstd / vs : torch::where(rstd > 0, torch::full_like(rstd, INFINITY), torch::zeros_like(rstd));
  };

  // p(x_T | y): measured coordinates that the start level covers start at y-bar.
  {
    const double s0 = r.sigmas[0];
    auto ratio = ratio_at(std::exp(-p.lambda(s0)));
    auto init = obs & (ratio <= 1);
    auto xbar = A.Vt(x);
    auto zbar = xbar / s0;
    auto c = torch::sqrt(torch::clamp(1 - ratio * ratio, 0));
    x = A.V(torch::where(init, p.add_noise(ybar, zbar * c, s0), xbar));
  }
  for (int i = 0; i < r.steps(); ++i) {
    const double s = r.sigmas[i], sn = r.sigmas[i + 1];
    Prediction pr = r.denoise(x, s);
    auto x0 = A.Vt(pr.x0()), eps = A.Vt(pr.renoise_eps());
    auto ratio = ratio_at(std::exp(-p.lambda(sn)));
    auto before = obs & (ratio <= 1);  // the next state is at least as noisy as y-bar_i
    auto after = obs & ~before;
    auto mean = torch::where(before, x0 * (1 - eta_b) + ybar * eta_b, x0);
    torch::Tensor n;
    if (sn > 0) {
      auto z = at::randn({N, D}, r.gen, x.options());
      auto inv_r = torch::where(after, 1 / rstd, torch::zeros_like(rstd));
      auto n_null = eps * keep + z * eta;
      auto n_after = (ybar - x0) * inv_r * keep + z * eta;
      auto n_before = z * torch::sqrt(torch::clamp(1 - ratio * ratio * (eta_b * eta_b), 0));
      n = torch::where(before, n_before, torch::where(after, n_after, n_null));
    } else {
      n = torch::zeros_like(x0);
    }
    x = A.V(p.add_noise(mean, n, sn));
    r.report(i, x, pr.x0());
  }
  return x;
}

RestoreSolverRegistrar reg(RestoreSolverInfo{"ddrm", "variational posterior in the SVD basis of A, with eta and eta_b (needs an SVD)",
                            "Kawar et al. 2022, DDRM", ddrm}
                               .requires_svd()
                               .option(restore_eta_option(0.85))
                               .option(MethodOption{"eta-b", 1.0,
                                                    "weight of y on coordinates measured with less noise than the state"}
                                           .in(0, 1)));

}  // namespace
}  // namespace tweedie
