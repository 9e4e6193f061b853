// DiffEdit (Couairon, Verbeek, Schwenk & Cord 2023, "DiffEdit: Diffusion-based
// Semantic Image Editing with Mask Guidance", ICLR).
//
// 1. Mask: noise the input to the level of mask_strength (a fraction of the
//    training timesteps, Process::s_at_timestep; the paper's 50%) n times,
//      M = mean_j |eps(x_j, target) - eps(x_j, source)|,
//    averaged over channels for images. The paper removes extreme values
//    and rescales to [0, 1]; as diffusers does, M is divided by clamp_ratio
//    (3) times its per-sample mean and clipped at 1, so a few outlying
//    pixels cannot shrink the mask (a min-max rescaling would let the
//    largest value set the scale). Then it is binarised at the threshold
//    (0.5): a pixel is edited where its difference exceeds 1.5x the mean.
//    Where the two conditions agree about the image the estimates agree.
// 2. Encoding: DDIM inversion under the source condition (w = 1) over the
//    last round(r K) steps of the schedule, keeping the state at every level
//    (inversion.cpp).
// 3. Decoding under the target condition (CFG at w) with mask guidance: after
//    each step, outside the mask the state is replaced by the encoded state
//    at the same level, y = M y + (1 - M) x_enc(s) (edit_detail::
//    run_with_step_edit on the sampler; any invertible sampler). Outside the
//    mask the output is therefore the input exactly.
// Verified (tests/test_edit.cpp): on a two-class Gaussian mixture whose
// class means differ only in some coordinates the mask is exactly those
// coordinates, also when one coordinate differs four times more than the
// others; the edited result equals the input outside the mask.
#include "tweedie/edit/diffedit.h"

#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/edit/edit_method.h"
#include "tweedie/edit/inversion.h"

namespace tweedie {

torch::Tensor diffedit_mask(Denoiser& model, const torch::Tensor& x, const Cond& source, const Cond& target,
                            const DiffEditOptions& o, torch::Generator gen) {
  check(o.mask_strength > 0 && o.mask_strength <= 1, "diffedit: the mask strength must be in (0, 1] (got ",
        o.mask_strength, ")");
  check(o.mask_samples >= 1, "diffedit: mask samples must be >= 1 (got ", o.mask_samples, ")");
  check(o.threshold >= 0 && o.threshold < 1, "diffedit: the mask threshold must be in [0, 1) (got ", o.threshold, ")");
  check(o.clamp_ratio > 0 && std::isfinite(o.clamp_ratio), "diffedit: the mask clamp ratio must be positive (got ",
        o.clamp_ratio, ")");
  check(gen.defined(), "diffedit needs a generator (a seed) for its mask noise");
  const Process& p = model.process();
  const double s = p.s_at_timestep(o.mask_strength * (p.timesteps() - 1));
  const auto x64 = x.to(torch::kFloat64);
  const Cond both = target.concat(source);
  torch::Tensor acc = torch::zeros_like(x64);
  for (int j = 0; j < o.mask_samples; ++j) {
    auto xs = p.add_noise(x64, at::randn(x64.sizes(), gen, x64.options()), s);
    auto eps = model.predict(torch::cat({xs, xs}), s, both).eps().chunk(2);
    acc += (eps[0] - eps[1]).abs();
  }
  if (acc.dim() == 4) acc = acc.mean(1, true);
  auto flat = acc.flatten(1);
  auto scale = (flat.mean(1, true) * o.clamp_ratio).clamp_min(1e-300);
  auto norm = (flat / scale).clamp_max(1).reshape(acc.sizes());
  return (norm > o.threshold).to(x.scalar_type());
}

DiffEditResult diffedit(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x,
                        const Cond& source, const Cond& target, const DiffEditOptions& o, torch::Generator gen) {
  DiffEditResult r;
  r.mask = diffedit_mask(*model, x, source, target, o, gen);
  const std::vector<double> tail = schedule_tail(sigmas, o.strength);
  if (tail.size() < 2) {  // strength 0
    r.edited = x.to(torch::kFloat64);
    return r;
  }
  InversionOptions io;
  io.sampler = o.sampler;
  Inversion inv = invert("ddim", model, tail, x, source, io);
  if (inv.steps() == 0) {
    r.edited = inv.latent;
    return r;
  }
  const auto m = r.mask.to(torch::kFloat64);
  DenoiserPtr d = edit_detail::guided(model, o.cfg);
  SamplerRun run(*d, inv.sigmas, target);
  r.edited = edit_detail::run_with_step_edit(find_sampler(o.sampler), run, inv.latent,
                                             [&](int i, const torch::Tensor& y) {
                                               return y * m + inv.trajectory[i + 1] * (1 - m);
                                             });
  return r;
}

namespace {

EditResult diffedit_edit(const EditRequest& r) {
  DiffEditOptions o;
  o.strength = r.strength, o.sampler = r.sampler, o.cfg = r.cfg;
  o.mask_strength = r.options.number("mask-strength");
  o.mask_samples = int(r.options.integer("mask-samples"));
  o.threshold = r.options.number("mask-threshold");
  o.clamp_ratio = r.options.number("mask-clamp");
  DiffEditResult d = diffedit(r.model, r.sigmas, r.x, r.source, r.target, o, r.gen);
  return {d.edited, d.mask};
}

EditMethodRegistrar reg(
    EditMethodInfo{"diffedit", "a mask from where source and target noise estimates disagree, then DDIM encoding and "
                               "a masked decoding toward the target",
                   "Couairon et al. 2023, DiffEdit", diffedit_edit}
        .strength(0.6)
        .needs_source()
        .invertible_sampler()
        .option(MethodOption{"mask-threshold", 0.5, "mask threshold"}.in(0, 1, false, true))
        .option(MethodOption{"mask-clamp", 3.0,
                             "the difference map is divided by this times its mean and clipped at 1 before the "
                             "threshold"}
                    .at_least(0, true))
        .option(MethodOption{"mask-samples", 10, "noise draws the mask averages over"}.whole().at_least(1))
        .option(MethodOption{"mask-strength", 0.5, "noise level of the mask as a fraction of the training timesteps"}
                    .in(0, 1, true, false)));

}  // namespace

}  // namespace tweedie
