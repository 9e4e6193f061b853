// Fixed-point DDIM inversion with Anderson acceleration (AIDI: Pan, Gherardi,
// Xie & Huang 2023, "Effective Real Image Editing with Accelerated Iterative
// Diffusion Inversion", ICCV; the fixed-point view of DDIM inversion also in
// Garibi et al. 2024, ReNoise).
//
// Decoding a step s' -> s (s < s') with DDIM is x_s = T(x_s', eps(x_s', s'),
// s' -> s) (edit_detail::transport). Exact inversion solves it for x_s':
//   x_s' = f(x_s') := T(x_s, eps(x_s', s'), s -> s'),
// an implicit equation that plain DDIM inversion replaces by one evaluation
// at the lower level, eps(x_s, s). Here it is iterated from that guess,
// z <- f(z), with Anderson acceleration (type II, history m, per sample):
//   g_k = f(z_k) - z_k,  gamma = argmin |g_k - dG gamma|,
//   z_{k+1} = z_k + g_k - (dZ + dG) gamma,
// dZ, dG the last m differences of the iterates and residuals (m = 0 is the
// plain iteration), until the RMS residual of every sample is below tol
// (iterations and the final residual per step are reported; the step keeps
// its best iterate when max_iter is reached). Decoding is plain DDIM at the
// same guidance scale; its error per step is that step's residual.
// At w = 1 the map is a contraction (f' = c (I - J), c = (s' - s)/s' < 1,
// J = dx0/dx with eigenvalues in [0, 1] for an exact denoiser), and a few
// iterations per step suffice. Under strong guidance (w = 3) J_w = w J_c -
// (w - 1) J_u is no longer bounded so, and at the levels where the class
// structure forms the iteration can fail to converge within max_iter
// (reported as a residual above tol); AIDI's remedy is to lower the
// guidance there.
// Verified (tests/test_edit.cpp): reconstruction to float precision on the
// Gaussian mixture at CFG 1 (where plain DDIM inversion is orders of
// magnitude worse), with fewer iterations than the plain iteration; the
// round-trip numbers on the default model are in bench/results/edit.md.
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/edit/inversion.h"

namespace tweedie {
namespace {

using edit_detail::transport;

// Per-sample RMS of r [N, ...].
torch::Tensor rms(const torch::Tensor& r) { return r.flatten(1).pow(2).mean(1).sqrt(); }

// Anderson mixing: the next iterate from z, g = f(z) - z and the history.
torch::Tensor anderson(const torch::Tensor& z, const torch::Tensor& g, const std::vector<torch::Tensor>& dz,
                       const std::vector<torch::Tensor>& dg) {
  if (dg.empty()) return z + g;
  const int64_t n = z.size(0);
  auto G = torch::stack(dg, 2).reshape({n, -1, int64_t(dg.size())});  // [N, D, m]
  auto Z = torch::stack(dz, 2).reshape({n, -1, int64_t(dz.size())});
  auto gt = g.reshape({n, -1, 1});
  auto A = G.transpose(1, 2).bmm(G);
  auto reg = A.diagonal(0, 1, 2).sum(1).reshape({n, 1, 1}) * 1e-10 + 1e-300;  // keeps A invertible
  auto gamma = torch::linalg::solve(A + torch::eye(A.size(1), A.options()) * reg, G.transpose(1, 2).bmm(gt), true);
  return z + g - (Z + G).bmm(gamma).reshape(z.sizes());
}

Inversion fixed_point_invert(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x0,
                             const Cond& c, const InversionOptions& o) {
  check(o.tol > 0, "fixed-point inversion: the tolerance must be positive (got ", o.tol, ")");
  check(o.max_iter >= 1, "fixed-point inversion: max iterations must be >= 1 (got ", o.max_iter, ")");
  check(o.anderson >= 0, "fixed-point inversion: the Anderson history must be >= 0 (got ", o.anderson, ")");
  Inversion inv = edit_detail::start("fixed-point", sigmas, c, o);
  DenoiserPtr d = edit_detail::guided(model, o.cfg);
  const Process& p = d->process();
  auto x = x0.to(torch::kFloat64);
  const int n = inv.steps();
  inv.iterations.assign(n, 0);
  inv.residuals.assign(n, 0.0);
  for (int k = n - 1; k >= 0; --k) {  // step k: sigmas[k + 1] -> sigmas[k]
    const double s = inv.sigmas[k + 1], sn = inv.sigmas[k];
    auto f = [&](const torch::Tensor& z) {
      ++inv.nfe;
      return transport(p, x, d->predict(z, sn, c).eps(), s, sn);
    };
    ++inv.nfe;
    torch::Tensor z = transport(p, x, d->predict(x, s, c).eps(), s, sn);  // the DDIM inversion guess
    torch::Tensor best = z, best_err;
    std::vector<torch::Tensor> dz, dg;
    torch::Tensor z_prev, g_prev;
    int it = 0;
    while (it < o.max_iter) {
      ++it;
      auto g = f(z) - z;
      auto err = rms(g);
      if (!best_err.defined()) {
        best = z, best_err = err;
      } else {
        auto better = (err < best_err).reshape({-1, 1}).expand({z.size(0), z[0].numel()}).reshape(z.sizes());
        best = torch::where(better, z, best);
        best_err = torch::minimum(err, best_err);
      }
      if (best_err.max().item<double>() < o.tol) break;
      if (z_prev.defined() && o.anderson > 0) {
        dz.push_back(z - z_prev), dg.push_back(g - g_prev);
        if (int(dz.size()) > o.anderson) dz.erase(dz.begin()), dg.erase(dg.begin());
      }
      z_prev = z, g_prev = g;
      z = anderson(z, g, dz, dg);
    }
    inv.iterations[k] = it;
    inv.residuals[k] = best_err.max().item<double>();
    x = best;
    if (o.progress) o.progress(n - k, n);
  }
  inv.latent = x;
  return inv;
}

torch::Tensor fixed_point_decode(const DenoiserPtr& model, const Inversion& inv, const Cond& c,
                                 const InversionOptions& o) {
  return edit_detail::sample_down(*edit_detail::guided(model, o.cfg), inv, c, o, "ddim");
}

InversionMethodRegistrar reg(InversionMethodInfo{"fixed-point",
                              "exact DDIM inversion: each implicit step solved by fixed-point iteration with Anderson "
                              "acceleration (--tol, --max-iter, --anderson)",
                              "Pan et al. 2023, AIDI", fixed_point_invert, fixed_point_decode}.reconstructs_exactly());

}  // namespace
}  // namespace tweedie
