// Classifier-free guidance (Ho & Salimans 2022, "Classifier-Free Diffusion
// Guidance"), with a negative condition in place of the null one (the
// "negative prompt" of Stable Diffusion front ends; for class models a
// negative class), a per-level scale and CFG-rescale:
//   x0 = x0(c_neg) + w(s) (x0(c) - x0(c_neg)),  c_neg = negative(c) or null.
// Verified on the class-labelled Gaussian mixture (tests/test_gmm.cpp,
// tests/test_guidance.cpp): w = 1 equals the conditional posterior mean, w = 0
// the unconditional one, the guided x0 is the affine combination exactly, a
// negative class gives the closed-form combination of the two class posterior
// means, and where w(s) = 1 only one branch is evaluated.
#include "tweedie/guide/cfg.h"

#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/nn/hooks.h"
#include "tweedie/guide/cfg_rescale.h"

namespace tweedie {

CFGDenoiser::CFGDenoiser(DenoiserPtr inner, double scale) : CFGDenoiser(std::move(inner), CFGOptions{scale}) {}

CFGDenoiser::CFGDenoiser(DenoiserPtr inner, CFGOptions opt) : GuidanceRule(std::move(inner)), opt_(std::move(opt)) {
  check(std::isfinite(opt_.scale), "cfg scale must be finite");
  check(opt_.rescale >= 0 && opt_.rescale <= 1, "cfg rescale must be in [0, 1] (got ", opt_.rescale, ")");
}

// Both branches run as one batch [cond; negative] (one network call per NFE).
Prediction CFGDenoiser::guide(const torch::Tensor& x, double s, const Cond& c) {
  const double w = opt_.scale_at ? opt_.scale_at(s) : opt_.scale;
  check(std::isfinite(w), "cfg scale at sigma ", s, " is not finite");
  if (w == 1.0) return inner(x, s, c);
  const Cond neg = opt_.negative ? opt_.negative(c) : c.null_like();
  Prediction both = [&] {
    BranchScope branches({"cond", "uncond"});
    return inner(torch::cat({x, x}), s, c.concat(neg));
  }();
  auto x0 = both.x0().chunk(2), eps = both.eps().chunk(2);
  torch::Tensor guided = x0[1] + (x0[0] - x0[1]) * w;
  if (opt_.rescale > 0) guided = cfg_rescale(guided, x0[0], opt_.rescale);
  Prediction out = Prediction::from_x0(guided, x, s, process());
  out.set_renoise_eps(eps[1]);
  return out;
}

std::function<Cond(const Cond&)> negative_class(int64_t k) {
  check(k >= -1, "negative class must be >= 0 (or -1 for the null class), got ", k);
  return [k](const Cond& c) {
    check(c.labels.defined(), "a negative class needs class labels in the condition");
    Cond n = c.null_like();
    n.labels = torch::full_like(c.labels, k);
    return n;
  };
}

}  // namespace tweedie
