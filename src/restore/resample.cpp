// ReSample (Song, Kwon, Zhang, Hu, Qu & Shen 2024, "Solving Inverse
// Problems with Latent Diffusion Models via Hard Data Consistency", ICLR;
// Algorithm 1): latent DPS steps, and at every --every-th step of the last
// two thirds hard data consistency followed by stochastic resampling:
//   z0* = argmin_z |y - A Dec(z)|^2, from the denoiser's z0, by AdamW
//         (--opt-steps iterations at most, --opt-lr; stops when the mean
//         squared residual is below max(sigma_y^2, 1e-6))
//   z'  ~ N( (v a(s') z0* + s'^2 z_dps) / (v + s'^2),  (1/v + 1/s'^2)^-1 I )
// where z_dps is the state the DPS step reached at the next level s' and
// v = gamma * (DDPM posterior variance of the step) (--resample-gamma; the
// paper's sigma_t^2 = 40 (1 - abar_{t-1}) / (1 - abar_t) (1 - abar_t /
// abar_{t-1}), written here in the state's units). The result is z0* of the
// final state, so the output meets the measurement as well as the optimizer
// gets it. The reference code's middle stage (consistency in pixel space,
// then encoding) is not done: every consistency step optimizes the latent.
// Latent models only (Measurement::decode).
// Verified (tests/test_restore.cpp, RestoreLatent*): the resampling mean and
// variance against the Gaussian product; the measurement residual of the
// result is below the unguided sample's and below latent DPS's.
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/restore/solver.h"
#include "tweedie/train/adamw.h"

namespace tweedie {

torch::Tensor hard_data_consistency(const Measurement& m, const torch::Tensor& z_init, int steps, double lr) {
  const auto y = m.y.to(torch::kFloat32);
  const double tol = std::max(m.sigma_y * m.sigma_y, 1e-6);
  torch::Tensor z = z_init.detach().to(torch::kFloat32).clone().requires_grad_(true);
  AdamW adam({{"z", z}}, AdamW::Options{lr, 0.9, 0.999, 1e-8, 0.01});  // torch.optim.AdamW's defaults
  torch::AutoGradMode grad_on(true);
  for (int it = 0; it < steps; ++it) {
    auto loss = (m.op->A(m.decode(z)) - y).pow(2).mean();
    if (loss.item<double>() < tol) break;
    z.mutable_grad() = torch::autograd::grad({loss}, {z})[0];
    adam.step(lr);
  }
  return z.detach().to(z_init.scalar_type());
}

torch::Tensor stochastic_resample(SamplerRun& r, const torch::Tensor& z0, const torch::Tensor& z_next, double s,
                                  double sn, double gamma) {
  const Process& p = r.process();
  const double post = p.ancestral_step(s, sn, 1.0).noise;  // DDPM posterior std of the step, state units
  const double v = gamma * post * post, n2 = sn * sn;
  const auto mean = (z0 * (v * p.a(sn)) + z_next * n2) / (v + n2);
  return mean + r.randn_like(mean) * std::sqrt(1.0 / (1.0 / v + 1.0 / n2));
}

namespace {

torch::Tensor resample(SamplerRun& r, const Measurement& m, torch::Tensor x, const MethodValues& o) {
  const int every = int(o.integer("every")), opt_steps = int(o.integer("opt-steps"));
  const double opt_lr = o.number("opt-lr"), gamma = o.number("resample-gamma");
  const int n = r.steps();
  for (int i = 0; i < n; ++i) {
    GuidedStep st = dps_step(r, m, x, i, o.number("eta"), o.number("zeta"), "resample");
    x = st.x;
    const double s = r.sigmas[i], sn = r.sigmas[i + 1];
    if (sn > 0 && i >= n / 3 && (i - n / 3) % every == 0)
      x = stochastic_resample(r, hard_data_consistency(m, st.x0, opt_steps, opt_lr), x, s, sn, gamma);
    r.report(i, x, st.x0);
  }
  return hard_data_consistency(m, x, opt_steps, opt_lr);
}

RestoreSolverRegistrar reg(RestoreSolverInfo{"resample", "latent DPS steps with hard data consistency (latent optimization) and stochastic "
                                  "resampling every --every steps of the last two thirds",
                      "Song et al. 2024, ReSample", resample}
                               .option(restore_eta_option(0.0))
                               .option(restore_zeta_option())
                               .option(MethodOption{"resample-gamma", 40,
                                                    "resampling variance in units of the step's DDPM posterior variance"}
                                           .at_least(0, true))
                               .option(MethodOption{"every", 10,
                                                    "hard data consistency every this many steps (of the last two thirds)"}
                                           .at_least(1)
                                           .whole())
                               .option(MethodOption{"opt-steps", 200, "latent optimization iterations at most"}
                                           .at_least(1)
                                           .whole())
                               .option(MethodOption{"opt-lr", 5e-3, "latent optimization learning rate"}.at_least(0, true))
                               .latent_only());

}  // namespace
}  // namespace tweedie
