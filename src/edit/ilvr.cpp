// ILVR (Choi, Kim, Jeong, Gwon & Yoon 2021, "ILVR: Conditioning Method for
// Denoising Diffusion Probabilistic Models", ICCV), Alg. 1.
//
// With the low-pass filter phi_N = up_N(down_N(.)) (average pooling by N and
// nearest upsampling: A^+ A of the super-resolution operator, restore/
// avgpool.cpp), each step of any sampler is followed by
//   y(s') = a(s') y + s' z,      z ~ N(0, I)      (the reference at the new level)
//   x'   <- x' - phi_N(x') + phi_N(y(s'))
// for the first `range` fraction of the steps (the paper's conditioning
// range), riding on the sampler's per-step callback
// (edit_detail::run_with_step_edit). At s' = 0, y(0) = y: with N = 1 (no
// filtering) the result is the reference itself; larger N keeps only the
// reference's coarse structure and lets the model fill in the details.
// Verified (tests/test_edit.cpp): N = 1 returns the reference; with N = 4
// the samples' low-pass images are the reference's, and much closer to it
// than unconditioned samples from the same noise.
#include "tweedie/edit/ilvr.h"

#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/edit/edit_method.h"
#include "tweedie/edit/inversion.h"
#include "tweedie/restore/operator.h"

namespace tweedie {

torch::Tensor ilvr(Denoiser& d, const std::vector<double>& sigmas, const torch::Tensor& noise,
                   const torch::Tensor& reference, const Cond& c, const ILVROptions& o, torch::Generator gen) {
  check(noise.dim() == 4, "ilvr: needs images [N, C, H, W] (got ", noise.sizes(), ")");
  check(reference.dim() == 4 && reference.sizes().slice(1) == noise.sizes().slice(1) &&
            (reference.size(0) == 1 || reference.size(0) == noise.size(0)),
        "ilvr: the reference ", reference.sizes(), " does not match the samples ", noise.sizes());
  check(o.factor >= 1, "ilvr: the downsampling factor must be >= 1 (got ", o.factor, ")");
  check(o.range >= 0 && o.range <= 1, "ilvr: the conditioning range must be in [0, 1] (got ", o.range, ")");
  check(gen.defined(), "ilvr needs a generator (a seed)");
  OperatorPtr pool = make_avgpool(noise.sizes().slice(1).vec(), o.factor);
  auto phi = [&](const torch::Tensor& v) { return pool->pinv(pool->A(v)); };
  const Process& p = d.process();
  const auto y = reference.to(noise.options()).expand_as(noise);
  SamplerRun run(d, sigmas, c, o.sampler_options, gen);
  const int conditioned = int(std::lround(o.range * run.steps()));
  return edit_detail::run_with_step_edit(find_sampler(o.sampler), run, noise * sigmas.at(0),
                                         [&](int i, const torch::Tensor& x) {
                                           if (i >= conditioned) return x;
                                           const double sn = run.sigmas[i + 1];
                                           auto ys = p.add_noise(y, run.randn_like(y), sn);
                                           return x - phi(x) + phi(ys);
                                         });
}

namespace {

EditResult ilvr_edit(const EditRequest& r) {
  ILVROptions o;
  o.factor = r.options.integer("factor"), o.range = r.options.number("range"), o.sampler = r.sampler;
  check(r.x.dim() == 4 && r.x.size(2) % o.factor == 0 && r.x.size(3) % o.factor == 0, "edit ilvr: --factor ", o.factor,
        " must divide the sample's height and width (", r.x.sizes(), ")");
  auto noise = at::randn(r.x.sizes(), r.gen, r.x.options());
  return {ilvr(*r.guided(), r.sigmas, noise, r.x, r.target, o, r.gen), {}};
}

EditMethodRegistrar reg(
    EditMethodInfo{"ilvr", "sample from noise toward the target, keeping the input's low frequencies (--factor, --range)",
                   "Choi et al. 2021, ILVR", ilvr_edit}
        .no_strength()
        .default_sampler("ddpm")
        .option(MethodOption{"factor", 4,
                             "low-pass downsampling factor N, a divisor of the model's sample height and width "
                             "(latent size for latent models; e.g. 1, 2, 4, 7, 14, 28 on Fashion-MNIST)"}
                    .whole()
                    .at_least(1))
        .option(MethodOption{"range", 1.0, "fraction of the steps (from the top) that are conditioned"}.in(0, 1)));

}  // namespace

}  // namespace tweedie
