// PSLD (Rout, Raoof, Daras, Caramanis, Dimakis & Shakkottai 2023, "Solving
// Linear Inverse Problems Provably via Posterior Sampling with Latent
// Diffusion Models", NeurIPS; Algorithm 2): DPS on a latent model, where the
// measurement acts on the decoded pixels, plus a "gluing" term that keeps the
// latent estimate a fixed point of decode -> replace the measured part ->
// encode:
//   z0 = D(z, s)                                       (with autograd on)
//   r  = |y - A Dec(z0)|
//   g  = |z0 - Enc(A^T y + (I - A^T A) Dec(z0))|        (the gluing residual)
//   z' = renoise(ddim_step(z0, s_down)) - zeta' grad_{z_t} (r + gamma g)
// with DPS's step convention (dps.cpp: per sample, in the model's space).
// zeta' (--zeta) is the paper's omega-scaled step, gamma (--gamma) its gluing
// weight (0.1 in the reference code). Latent models only (Measurement::decode
// and ::encode); gamma = 0 is latent DPS bit for bit.
// Verified (tests/test_restore.cpp, RestoreLatent*): on a toy latent model
// with a linear decoder the gradient equals the closed form; gamma = 0 equals
// dps; inpainting meets the measurement better than the unguided sample.
#include "tweedie/core/error.h"
#include "tweedie/restore/solver.h"

namespace tweedie {
namespace {

torch::Tensor psld(SamplerRun& r, const Measurement& m, torch::Tensor x, const MethodValues& o) {
  const auto y = m.y.to(torch::kFloat32);
  const double gamma = o.number("gamma");
  auto glue = [&](const torch::Tensor& z0) {
    const auto px = m.decode(z0);
    const auto glued = m.op->At(y.to(px.dtype())) + px - m.op->At(m.op->A(px));
    return (z0 - m.encode(glued)).flatten(1).norm(2, 1).sum() * gamma;
  };
  for (int i = 0; i < r.steps(); ++i) {
    GuidedStep st = dps_step(r, m, x, i, o.number("eta"), o.number("zeta"), "psld", gamma > 0 ? LossFn(glue) : LossFn{});
    x = st.x;
    r.report(i, x, st.x0);
  }
  return x;
}

RestoreSolverRegistrar reg(RestoreSolverInfo{"psld", "latent DPS plus the gluing term |z0 - Enc(A^T y + (I - A^T A) Dec(z0))| (--gamma)",
                      "Rout et al. 2023, PSLD", psld}
                               .option(restore_eta_option(1.0))
                               .option(restore_zeta_option())
                               .option(MethodOption{"gamma", 0.1, "weight of the gluing term"}.at_least(0))
                               .latent_only());

}  // namespace
}  // namespace tweedie
