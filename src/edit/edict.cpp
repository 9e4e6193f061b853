// EDICT (Wallace, Gokul & Naik 2023, "EDICT: Exact Diffusion Inversion via
// Coupled Transformations", CVPR).
//
// Two coupled sequences x, y, both the data at the bottom. Writing
// T(u, e, s -> s') for the DDIM move of u from level s to s' with the fixed
// noise estimate e (edit_detail::transport, affine in u and exactly undone by
// T(., e, s' -> s)), one denoising step s -> s' (s' < s) is
//   x_i = T(x, eps(y, s), s -> s')
//   y_i = T(y, eps(x_i, s), s -> s')
//   x'  = p x_i + (1 - p) y_i
//   y'  = p y_i + (1 - p) x'
// with the mixing weight p (0.93 in the paper). Each line is invertible given
// the others, so the inversion runs the lines backwards, from the bottom up:
//   y_i = (y' - (1 - p) x') / p,   x_i = (x' - (1 - p) y_i) / p
//   y   = T(y_i, eps(x_i, s), s' -> s),   x = T(x_i, eps(y, s), s' -> s)
// evaluating the network at exactly the inputs the denoising step will see:
// the round trip is exact up to floating-point rounding (two evaluations per
// step each way). Any guidance (CFG at w) rides on eps; decoding under another
// condition edits. The decoded image is x.
// Verified (tests/test_edit.cpp): reconstruction to float precision on the
// default model at CFG 1 and 3 and on the Gaussian mixture.
#include "tweedie/core/error.h"
#include "tweedie/edit/inversion.h"

namespace tweedie {
namespace {

using edit_detail::transport;

Inversion edict_invert(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x0,
                       const Cond& c, const InversionOptions& o) {
  const double p = o.edict_p, q = 1 - p;
  check(p > 0 && p <= 1, "edict: the mixing weight p must be in (0, 1] (got ", p, ")");
  Inversion inv = edit_detail::start("edict", sigmas, c, o);
  DenoiserPtr d = edit_detail::guided(model, o.cfg);
  const Process& proc = d->process();
  auto x = x0.to(torch::kFloat64), y = x.clone();
  const int n = inv.steps();
  for (int k = n - 1; k >= 0; --k) {  // from the bottom level up: step k goes sigmas[k] -> sigmas[k + 1]
    const double s = inv.sigmas[k], s_lo = inv.sigmas[k + 1];
    auto yi = (y - x * q) / p;
    auto xi = (x - yi * q) / p;
    y = transport(proc, yi, d->predict(xi, s, c).eps(), s_lo, s);
    x = transport(proc, xi, d->predict(y, s, c).eps(), s_lo, s);
    inv.nfe += 2;
    if (o.progress) o.progress(n - k, n);
  }
  inv.latent = x;
  inv.latent_aux = y;
  return inv;
}

torch::Tensor edict_decode(const DenoiserPtr& model, const Inversion& inv, const Cond& c, const InversionOptions& o) {
  const double p = inv.options.edict_p, q = 1 - p;
  check(inv.latent_aux.defined(), "edict: the inversion has no second sequence (not an EDICT inversion)");
  DenoiserPtr d = edit_detail::guided(model, o.cfg);
  const Process& proc = d->process();
  auto x = inv.latent, y = inv.latent_aux;
  for (int k = 0; k < inv.steps(); ++k) {
    const double s = inv.sigmas[k], s_lo = inv.sigmas[k + 1];
    auto xi = transport(proc, x, d->predict(y, s, c).eps(), s, s_lo);
    auto yi = transport(proc, y, d->predict(xi, s, c).eps(), s, s_lo);
    x = xi * p + yi * q;
    y = yi * p + x * q;
    if (o.progress) o.progress(k + 1, inv.steps());
  }
  return x;
}

InversionMethodRegistrar reg(InversionMethodInfo{"edict", "EDICT: exact inversion by two coupled DDIM sequences mixed with weight p (--edict-p)",
                              "Wallace et al. 2023, EDICT", edict_invert, edict_decode}.reconstructs_exactly());

}  // namespace
}  // namespace tweedie
