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

#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/nn/hooks.h"
#include "tweedie/guide/cfg_rescale.h"
#include "tweedie/guide/cfg_schedule.h"
#include "tweedie/guide/guidance.h"
#include "tweedie/guide/guidance_interval.h"

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
  torch::Tensor guided = combine(x0[0], x0[1], w, x, s);
  if (opt_.rescale > 0) guided = cfg_rescale(guided, x0[0], opt_.rescale);
  Prediction out = Prediction::from_x0(guided, x, s, process());
  out.set_renoise_eps(eps[1]);
  return out;
}

torch::Tensor CFGDenoiser::combine(const torch::Tensor& x0_cond, const torch::Tensor& x0_neg, double w,
                                  const torch::Tensor&, double) {
  return x0_neg + (x0_cond - x0_neg) * w;
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

namespace {

GuidanceInterval interval_of(const GuidanceOptions& g) {
  if (!g.has("guidance-interval")) return {};
  const std::string t = g.text("guidance-interval");
  auto [lo, hi] = parse_number_pair(t, "guidance-interval", true);
  check(lo >= 0, "--guidance-interval: LO must be >= 0 (got ", t, ")");
  check(lo < hi, "--guidance-interval: LO must be below HI (got ", t, ")");
  return {lo, hi};
}

CFGSchedule schedule_of(const GuidanceOptions& g) {
  try {
    return cfg_schedule_from_string(g.text("cfg-schedule"));
  } catch (const Error&) {
    fail("--cfg-schedule: unknown schedule '", g.text("cfg-schedule"), "' (constant, linear, cosine)");
  }
}

DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions& g, const std::shared_ptr<NetDenoiser>&) {
  CFGOptions o = cfg_options(g, inner->process());
  return std::make_shared<CFGDenoiser>(std::move(inner), std::move(o));
}

std::string describe(const GuidanceOptions& g) {
  std::ostringstream o;
  o << "cfg " << g.cfg();
  if (!g.guides()) return o.str();
  if (g.has("negative-class")) o << ", negative class " << g.text("negative-class");
  const CFGSchedule k = schedule_of(g);
  if (k != CFGSchedule::Constant) o << ", " << to_string(k) << " schedule";
  const GuidanceInterval iv = interval_of(g);
  if (!iv.everything()) o << ", interval (" << iv.lo << ", " << iv.hi << "]";
  if (g.number("cfg-rescale") > 0) o << ", rescale " << g.number("cfg-rescale");
  return o.str();
}

GuidanceRuleRegistrar reg(
    GuidanceRuleInfo{"cfg", "classifier-free guidance toward the condition, away from the negative or null one",
                     "Ho & Salimans 2022", 40, build, describe}
        .option(MethodOption{"cfg", 1, "classifier-free guidance scale w (1 = none)"})
        .option(MethodOption::text("negative-class", "",
                                   "CFG pushes away from this class (name or index) instead of the unconditional model"))
        .option(MethodOption{"cfg-rescale", 0,
                             "CFG-rescale phi (Lin et al. 2024): mix of the guided x0 rescaled to the conditional x0's "
                             "std (0.7 in the paper)"}
                    .in(0, 1))
        .option(MethodOption::text("guidance-interval", "",
                                   "LO,HI: CFG only for sigma in (LO, HI] (Kynkaanniemi et al. 2024; HI may be inf); one "
                                   "conditional evaluation elsewhere"))
        .option(MethodOption::text("cfg-schedule", "constant",
                                   "guidance strength (cfg - 1) times f(tau), tau = normalized model time, 1 = pure "
                                   "noise: constant (1), linear (2(1-tau)), cosine (1+cos(pi tau))"))
        .attachment("negative")
        .loads("negative-class", GuidanceResource::ClassIndex)
        .off_at(1)
        .needs_condition()
        .for_text_models()
        .off_message("has no effect without guidance: give --cfg other than 1"));

}  // namespace

CFGOptions cfg_options(const GuidanceOptions& g, const Process& p) {
  CFGOptions o;
  o.scale = g.cfg();
  check(!(g.has("negative") && g.has("negative-class")), "give a negative condition or a negative class, not both");
  if (g.has("negative-class")) o.negative = negative_class(g.object<int64_t>("negative-class"));
  if (g.has("negative")) o.negative = g.object<std::function<Cond(const Cond&)>>("negative");
  o.rescale = g.number("cfg-rescale");
  const CFGSchedule k = schedule_of(g);
  const GuidanceInterval iv = interval_of(g);
  if (k != CFGSchedule::Constant || !iv.everything()) {
    const Process* proc = &p;  // owned by the denoiser the CFG rule wraps, which it keeps alive
    o.scale_at = [proc, w = o.scale, k, iv](double s) {
      return interval_cfg_scale(iv, scheduled_cfg_scale(k, w, *proc, s), s);
    };
  }
  return o;
}

}  // namespace tweedie
