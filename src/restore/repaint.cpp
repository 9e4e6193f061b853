// RePaint (Lugmayr, Danelljan, Romero, Yu, Timofte & Van Gool 2022,
// "RePaint: Inpainting using Denoising Diffusion Probabilistic Models", CVPR;
// Algorithm 1 with the released code's jump schedule).
//
// Inpainting with an unconditional model: every reverse step is a DDPM step
// (DDIM with eta = 1, the posterior of the skipped step) on the whole image,
// after which the known region is replaced by the measurement noised to the
// new level:
//   x' = renoise(ddim_step(D(x, s), s_down))               (unknown region)
//   x' <- m (a(s') y + s' z) + (1 - m) x'                  (known region)
// (project_to_noised_measurement, solver.cpp; at s' = 0 the known region is y
// itself). Resampling harmonises the two regions: on RePaint's path
// (time_travel_path, jump length j = travel_length, r = travel_repeat passes,
// the paper's get_schedule_jump) the state moves back up one level at a time
// by the forward process q(x_{s+1} | x_s) (Process::noise_up) and is denoised
// again. travel_repeat = 1 is plain blending (Blended Diffusion with a DDPM
// step). Mask operators only (Operator::is_mask); a noisy y is pasted as it is.
// Verified (tests/test_restore.cpp): with sigma_y = 0 the known region equals
// y exactly; without resampling it equals Blended Diffusion with DDIM eta = 1
// bit for bit; on a two-component Gaussian mixture (where the known pixels
// say which component the missing ones come from) plain blending is biased
// and resampling moves the mean of many runs towards the closed-form
// posterior mean; the NFE follows the jump path; non-mask operators and
// jump lengths < 1 are rejected.
#include "tweedie/restore/solver.h"

namespace tweedie {
namespace {

torch::Tensor repaint(SamplerRun& r, const Measurement& m, torch::Tensor x, const MethodValues& o) {
  const Process& p = r.process();
  const std::vector<int> path = time_travel_path(r.steps(), int(o.integer("travel-length")), int(o.integer("travel-repeat")));
  for (size_t i = 1; i < path.size(); ++i) {
    const int k = path[i - 1], kn = path[i];
    const double s = r.sigmas[k], sn = r.sigmas[kn];
    if (kn < k) {  // resample: back up one level by the forward process
      x = p.noise_up(x, r.randn_like(x), s, sn);
      continue;
    }
    Prediction pr = r.denoise(x, s);
    auto step = p.ancestral_step(s, sn, 1.0);
    x = project_to_noised_measurement(r, m, r.renoise(ddim_step(p, pr, step.s_down), step), sn);
    r.report(k, x, pr.x0());
  }
  return x;
}

RestoreSolverRegistrar reg(RestoreSolverInfo{"repaint", "DDPM steps pasting the noised known region, resampling with jumps (L, r)",
                            "Lugmayr et al. 2022, RePaint", repaint}
                               .options_of(time_travel_options())
                               .for_masks_only());

}  // namespace
}  // namespace tweedie
