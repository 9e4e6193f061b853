// SDEdit (Meng, He, Song, Song, Wu, Zhu & Ermon 2022, "SDEdit: Guided Image
// Synthesis and Editing with Stochastic Differential Equations", ICLR).
//
// Perturb the input x to an intermediate level and run the reverse process
// from there under the target condition:
//   s0 = the level where the last round(t0 K) steps of the K-step schedule
//        start (schedule_tail; t0 = strength),
//   x(s0) = a(s0) x + s0 z,  z ~ N(0, I) from gen,
//   output = sampler(x(s0)) over the tail of the schedule, to 0.
// The sampler is any registered one (the paper's is the SDE / DDPM; DDIM is
// the deterministic variant), and guidance is whatever the denoiser carries.
// t0 = 0 returns the input; t0 = 1 starts from the top of the schedule, where
// the state is the noise (for VP up to the data's negligible share a = 1 next
// to s_max), i.e. plain sampling from that noise.
// Verified (tests/test_edit.cpp): strength 0 returns the input exactly,
// strength 1 equals sampling from the same noise, strengths outside [0, 1]
// are an error, and on the default model an edit toward another class raises
// the classifier's probability of that class.
#include "tweedie/edit/sdedit.h"

#include "tweedie/core/error.h"
#include "tweedie/edit/edit_method.h"
#include "tweedie/edit/inversion.h"

namespace tweedie {

torch::Tensor sdedit(Denoiser& d, const std::vector<double>& sigmas, const torch::Tensor& x, const Cond& target,
                     const SDEditOptions& o, torch::Generator gen) {
  const std::vector<double> tail = schedule_tail(sigmas, o.strength);
  check(x.defined() && x.dim() >= 2, "sdedit: the input must be a batch [N, ...]");
  if (tail.size() < 2) return x.clone();
  const SamplerInfo& info = find_sampler(o.sampler);
  check(gen.defined(), "sdedit needs a generator (a seed) for its noise");
  auto z = at::randn(x.sizes(), gen, x.options());
  SamplerRun run(d, tail, target, o.sampler_options, gen);
  run.callback = o.callback;
  return run_sampler(info, run, d.process().add_noise(x, z, tail[0]));
}

namespace {

EditResult sdedit_edit(const EditRequest& r) {
  return {sdedit(*r.guided(), r.sigmas, r.x, r.target, {r.strength, r.sampler, {}}, r.gen), {}};
}

EditMethodRegistrar reg(EditMethodInfo{"sdedit", "noise the input part of the way (--strength), denoise toward the target",
                                       "Meng et al. 2022, SDEdit", sdedit_edit}
                            .strength(0.6));

}  // namespace

}  // namespace tweedie
