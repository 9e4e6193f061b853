// Negative-prompt inversion (Miyake, Iohara, Saito & Tanaka 2023,
// "Negative-prompt Inversion: Fast Image Inversion for Editing with
// Text-guided Diffusion Models").
//
// Null-text inversion's optimized null embeddings end up close to the source
// condition itself; this method uses the source condition directly as CFG's
// negative branch, with no optimization:
//   invert: DDIM inversion at w = 1 under the source condition c_src;
//   decode: CFG at w with the negative branch c_src,
//           eps = eps(c_src) + w (eps(c) - eps(c_src)).
// Reconstructing (c = c_src) the guidance term vanishes at every w, so the
// round trip is that of DDIM inversion at w = 1 whatever the scale; an edit
// (c = another class) is guided away from the source.
// Verified (tests/test_edit.cpp): reconstruction at CFG 3 equals the w = 1
// round trip and beats plain DDIM inversion at CFG 3; an edit decodes to
// the target class.
#include "tweedie/core/error.h"
#include "tweedie/edit/inversion.h"
#include "tweedie/guide/cfg.h"

namespace tweedie {
namespace {

Inversion negative_prompt_invert(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x,
                                 const Cond& c, const InversionOptions& o) {
  InversionOptions at1 = o;
  at1.cfg = 1.0;
  Inversion inv = find_inversion_method("ddim").invert(model, sigmas, x, c, at1);
  inv.method = "negative-prompt";
  return inv;
}

torch::Tensor negative_prompt_decode(const DenoiserPtr& model, const Inversion& inv, const Cond& c,
                                     const InversionOptions& o) {
  CFGOptions g;
  g.scale = o.cfg;
  g.negative = [src = inv.source](const Cond&) { return src; };
  CFGDenoiser guided(model, g);
  return edit_detail::sample_down(guided, inv, c, o, inv.options.sampler, inv.options.sampler_options);
}

InversionMethodRegistrar reg(InversionMethodInfo{"negative-prompt",
                              "negative-prompt inversion: DDIM inversion at w = 1, decoded with the source condition as "
                              "CFG's negative branch",
                              "Miyake et al. 2023, Negative-prompt Inversion", negative_prompt_invert,
                              negative_prompt_decode});

}  // namespace
}  // namespace tweedie
