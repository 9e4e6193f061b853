// Blended Diffusion (Avrahami, Lischinski & Fried 2022, "Blended Diffusion
// for Text-driven Editing of Natural Images", CVPR, Section 4.1; and Blended
// Latent Diffusion, Avrahami, Fried & Lischinski 2023, the same blend in
// latent space), here without the text guidance: inpainting by blending.
//
// At every step the region to generate (m_gen = 1 - the observed mask) comes
// from one step of an ordinary sampler and the rest from the measurement
// noised to the new level:
//   x_gen = sampler step from (x, s) to s'      (any registered sampler, --sampler; default ddpm as in the paper)
//   x'    = m_gen x_gen + (1 - m_gen) (a(s') y + s' z)
// (project_to_noised_measurement, solver.cpp). Each step is a fresh one-step
// run of the sampler (run_sampler over {s, s'}), so single-step samplers
// compose exactly and multistep ones restart their history every step. The
// sampler's noise (eta, s_noise) comes from the run's SamplerOptions and
// its --eta option. Mask operators only (Operator::is_mask).
// Verified (tests/test_restore.cpp): with sigma_y = 0 the known region equals
// y exactly; with sampler ddim and eta = 1 it equals RePaint without
// resampling bit for bit; the NFE is the sampler's per step; non-mask
// operators and unknown samplers are rejected.
#include "tweedie/restore/solver.h"

namespace tweedie {
namespace {

torch::Tensor blended(SamplerRun& r, const Measurement& m, torch::Tensor x, const MethodValues& o) {
  const SamplerInfo& sampler = find_sampler(o.text("sampler"));
  SamplerOptions so = r.opt;
  if (o.given("eta")) so.eta = o.number("eta");
  for (int i = 0; i < r.steps(); ++i) {
    SamplerRun one(r.model, {r.sigmas[i], r.sigmas[i + 1]}, r.cond, so, r.gen);
    torch::Tensor x0;
    one.callback = [&](const StepInfo& st) { x0 = st.x0; };
    x = project_to_noised_measurement(r, m, run_sampler(sampler, one, x), r.sigmas[i + 1]);
    r.nfe += one.nfe;
    r.report(i, x, x0);
  }
  return x;
}

RestoreSolverRegistrar reg(RestoreSolverInfo{"blended", "one sampler step (--sampler) blended with the noised known region",
                            "Avrahami et al. 2022, Blended Diffusion", blended}
                               .for_masks_only()
                               .option(MethodOption::text("sampler", "ddpm",
                                                          "the sampler of each step (see 'tweedie samplers')"))
                               .option(restore_eta_option(-1)));  // -1: the sampler's own default

}  // namespace
}  // namespace tweedie
