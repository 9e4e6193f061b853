// DDIB (Su, Song, Meng & Ermon 2023, "Dual Diffusion Implicit Bridges for
// Image-to-Image Translation", ICLR).
//
// Two diffusion models share a latent space through their probability-flow
// ODEs: encode with the source model's ODE to the top, decode with the
// target's. With one class-conditional model the two are its source and
// target classes:
//   latent = DDIM-invert(x; source)        (inversion.cpp, w = 1)
//   output = DDIM-sample(latent; target)   (CFG at o.cfg)
// over the last round(strength K) steps of the schedule (strength 1: the
// whole schedule, as in the paper). With source == target it is the round
// trip of DDIM inversion.
// Verified (tests/test_edit.cpp): source == target is the DDIM inversion
// round trip (small on the mixture with many steps); translating between
// the mixture's classes moves the samples to the target class's component.
#include "tweedie/edit/ddib.h"

#include "tweedie/edit/edit_method.h"
#include "tweedie/edit/inversion.h"

namespace tweedie {

torch::Tensor ddib(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x,
                   const Cond& source, const Cond& target, const DDIBOptions& o) {
  const std::vector<double> tail = schedule_tail(sigmas, o.strength);
  if (tail.size() < 2) return x.to(torch::kFloat64);  // strength 0
  InversionOptions io;
  io.sampler = o.sampler;
  Inversion inv = invert("ddim", model, tail, x, source, io);
  io.cfg = o.cfg;
  return decode(model, inv, target, io);
}

namespace {

EditResult ddib_edit(const EditRequest& r) {
  return {ddib(r.model, r.sigmas, r.x, r.source, r.target, {r.strength, r.sampler, r.cfg}), {}};
}

EditMethodRegistrar reg(EditMethodInfo{"ddib", "encode under the source condition with an invertible sampler, decode "
                                               "under the target",
                                       "Su et al. 2023, Dual Diffusion Implicit Bridges", ddib_edit}
                            .strength(1.0)
                            .needs_source()
                            .invertible_sampler());

}  // namespace

}  // namespace tweedie
