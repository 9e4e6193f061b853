// DDNM and DDNM+ (Wang, Yu & Zhang 2023, "Zero-Shot Image Restoration Using
// Denoising Diffusion Null-Space Model", ICLR; Algorithms 1 and 2).
//
// Range-null space decomposition: any x = A^+ A x + (I - A^+ A) x, and a
// restoration consistent with y = A x has range part A^+ y. Each step keeps
// the denoiser's null-space content and replaces its range part:
//   x0, eps = D(x, s)
//   x0^ = A^+ y + (I - A^+ A) x0 = x0 - A^+ (A x0 - y)
//   x'  = a(s') x0^ + s' (eta z + sqrt(1 - eta^2) eps)       (DDNM's DDIM-style step)
// in sampling space (Process::add_noise), with eta the fresh-noise fraction
// (0.85 by default, as in the authors' code). At s' = 0, x' = x0^, so A x' = y
// exactly for a noiseless y in the range of A.
//
// DDNM+ (noisy y = A x + sigma_y n, and time travel). In the spectral basis
// of A = U S V^T, A^+ y carries noise of VE standard deviation
// r_i = sigma_y / s_i on each measured coordinate i. With
// sigma' = exp(-lambda(s')) the VE level of the next state, coordinate i of the
// correction is scaled by lambda_i and the noise is re-balanced so that the
// state keeps its total variance:
//   sigma' >= r_i:  lambda_i = 1,                          fresh noise sqrt(1 - (r_i/sigma')^2), no eps
//   sigma' <  r_i:  lambda_i = sigma' sqrt(1 - eta^2) / r_i, fresh noise eta,                      no eps
//   null space:     DDNM's step (fresh eta, eps sqrt(1 - eta^2))
//   x0^ = x0 - V diag(lambda) V^T A^+ (A x0 - y)
// (Eq. 17-19 and the authors' svd_ddnm.py; with sigma_y = 0 it is DDNM.)
// Time travel: on RePaint's path (time_travel_path), every L-th step jumps
// back L levels by the forward process q(x_{s+L} | x_s) (Process::noise_up)
// and repeats, r - 1 times, which harmonises the null space with the range.
// Verified (tests/test_restore.cpp): with sigma_y = 0 the result satisfies
// |A x - y| ~ 0 for masking, super-resolution, blur and denoising; on a
// Gaussian prior (single-component mixture) with a noiseless mask the mean of
// 4000 runs is the closed-form posterior mean within Monte-Carlo error; with
// noise DDNM+ is an approximation and lands much closer to it than A^+ y;
// without time travel DDNM+ equals DDRM (eta_b = 1) on masks and A = I; the
// time-travel path matches RePaint's; same seed, same bits.
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/restore/solver.h"

namespace tweedie {
namespace {

torch::Tensor ddnm_run(SamplerRun& r, const Measurement& m, torch::Tensor x, const MethodValues& o, bool plus) {
  const Process& p = r.process();
  const Operator& A = *m.op;
  const double eta = o.number("eta"), keep = std::sqrt(1 - eta * eta);
  const bool noisy = plus && m.sigma_y > 0;
  if (noisy) A.require_svd("ddnm+ with sigma_y > 0");
  const auto y = m.y.to(x.options());
  torch::Tensor obs, rstd;  // DDNM+: measured coordinates and the VE noise std of A^+ y on them
  if (noisy) {
    auto S = A.spectral_singulars().to(x.options());
    obs = S > 0;
    rstd = torch::where(obs, m.sigma_y / S, torch::zeros_like(S));
  }
  const std::vector<int> path =
      plus ? time_travel_path(r.steps(), int(o.integer("travel-length")), int(o.integer("travel-repeat")))
           : time_travel_path(r.steps(), 1, 1);
  for (size_t i = 1; i < path.size(); ++i) {
    const int k = path[i - 1], kn = path[i];
    const double s = r.sigmas[k], sn = r.sigmas[kn];
    if (kn < k) {  // time travel: back up one level by the forward process
      x = p.noise_up(x, r.randn_like(x), s, sn);
      continue;
    }
    Prediction pr = r.denoise(x, s);
    const torch::Tensor& eps = pr.renoise_eps();
    torch::Tensor x0h;
    if (!noisy) {
      x0h = pr.x0() - A.pinv(A.A(pr.x0()) - y);
      torch::Tensor n = eps;
      if (sn > 0 && eta > 0) n = r.randn_like(x) * eta + eps * keep;
      x = p.add_noise(x0h, n, sn);
    } else {
      const double vn = std::exp(-p.lambda(sn));  // VE level of the next state (0 at s' = 0)
      auto ratio = vn > 0 ? rstd / vn : torch::where(obs, torch::full_like(rstd, INFINITY), rstd);
      auto above = obs & (ratio <= 1);
      auto lam = torch::where(obs & ~above, keep / ratio, torch::ones_like(rstd));
      auto fresh = torch::where(above, torch::sqrt(torch::clamp(1 - ratio * ratio, 0)), torch::full_like(rstd, eta));
      auto epsc = torch::where(obs, torch::zeros_like(rstd), torch::full_like(rstd, keep));
      x0h = pr.x0() - A.V(A.Vt(A.pinv(A.A(pr.x0()) - y)) * lam);
      if (sn > 0) {
        auto zbar = at::randn({x.size(0), A.in_dim()}, r.gen, x.options());
        x = p.add_noise(x0h, A.V(zbar * fresh + A.Vt(eps) * epsc), sn);
      } else {
        x = x0h;
      }
    }
    r.report(k, x, x0h);
  }
  return x;
}

torch::Tensor ddnm(SamplerRun& r, const Measurement& m, torch::Tensor x, const MethodValues& o) {
  return ddnm_run(r, m, std::move(x), o, false);
}
torch::Tensor ddnm_plus(SamplerRun& r, const Measurement& m, torch::Tensor x, const MethodValues& o) {
  return ddnm_run(r, m, std::move(x), o, true);
}

RestoreSolverRegistrar reg1(RestoreSolverInfo{"ddnm", "null-space projection x0 <- A^+ y + (I - A^+ A) x0 each step (noiseless y)",
                             "Wang et al. 2023, DDNM", ddnm}
                                .option(restore_eta_option(0.85)));
RestoreSolverRegistrar reg2(RestoreSolverInfo{"ddnm+", "DDNM with noise-aware scaling for sigma_y > 0 (SVD) and time travel (L, r)",
                             "Wang et al. 2023, DDNM", ddnm_plus}
                                .option(restore_eta_option(0.85))
                                .options_of(time_travel_options()));

}  // namespace
}  // namespace tweedie
