// MCG (Chung, Sim, Ryu & Ye 2022, "Improving Diffusion Models for Inverse
// Problems using Manifold Constraints", NeurIPS; Algorithm 1).
//
// Each step is DPS's step (dps_step, dps.cpp) -- the ancestral (DDPM) step on
// the denoiser's x0 followed by the manifold-constrained gradient step on the
// measurement residual through the denoiser,
//   x' = renoise(ddim_step(x0, s_down)) - zeta' grad_x |y - A x0(x)|
// (the step size normalised by |y - A x0| as in the DPS authors' MCG code; the
// paper's alpha grad |W (y - A x0)|^2 with alpha = zeta' / (2 |y - A x0|)) --
// followed by the projection onto the measurement set at the next level:
//   y' = a(s') y + s' A z,   x' <- x' + A^+ (y' - A x')
// (project_to_noised_measurement, solver.cpp): for a mask, A^T y' + (I - A^T A) x',
// the paper's P^T y_{i-1} + (I - P^T P) x'_{i-1}; for a general A the
// orthogonal projection onto {A x = y'} through A^+. At s' = 0, y' = y, so
// the result satisfies A x = y exactly for y in the range of A (with noisy y
// the projection keeps the noise, which the DPS paper notes as MCG's weakness).
// Verified (tests/test_restore.cpp): |A x - y| ~ 0 for a noiseless y on every
// operator; on a Gaussian prior with noiseless super-resolution the mean of
// many runs lands far closer to the closed-form posterior mean than A^+ y; a
// non-differentiable denoiser is rejected.
#include "tweedie/restore/solver.h"

namespace tweedie {
namespace {

torch::Tensor mcg(SamplerRun& r, const Measurement& m, torch::Tensor x, const MethodValues& o) {
  for (int i = 0; i < r.steps(); ++i) {
    GuidedStep st = dps_step(r, m, x, i, o.number("eta"), o.number("zeta"), "mcg");
    x = project_to_noised_measurement(r, m, st.x, r.sigmas[i + 1]);
    r.report(i, x, st.x0);
  }
  return x;
}

RestoreSolverRegistrar reg(RestoreSolverInfo{"mcg", "DPS's gradient step, then projection onto the noised measurement A x = y_t",
                            "Chung et al. 2022, MCG", mcg}
                               .option(restore_eta_option(1.0))
                               .option(restore_zeta_option()));

}  // namespace
}  // namespace tweedie
