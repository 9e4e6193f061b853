// Classifier-free guidance (Ho & Salimans 2022) as a Denoiser over a Denoiser:
//   x0 = x0_neg + w(s) (x0_cond - x0_neg)
// (identical in eps, x0 or v form at a fixed state, since the conversions are
// affine with the same x). w = 1 is the conditional model, w = 0 the negative
// branch alone. The negative branch is the unconditional model (the null
// condition, Cond::null_like) unless a negative condition is given, e.g. a
// negative class: then CFG pushes away from that class instead of from the
// unconditional model. The negative branch's eps is kept as the prediction's
// renoise_eps for CFG++ samplers (Chung et al. 2024).
//
// The scale may depend on the noise level (scale_at: schedules, guidance
// interval; see cfg_schedule.h, guidance_interval.h). Where w(s) = 1 only the
// conditional branch is evaluated. With rescale phi > 0 the guided x0 is
// rescaled toward the conditional x0's standard deviation (cfg_rescale.h).
#pragma once
#include <functional>

#include "tweedie/guide/guidance_rule.h"
#include "tweedie/models/denoiser.h"

namespace tweedie {

struct CFGOptions {
  double scale = 1.0;
  // The negative branch's condition given the positive one; empty = Cond::null_like.
  std::function<Cond(const Cond&)> negative;
  // Scale at noise level s; empty = the constant `scale`.
  std::function<double(double s)> scale_at;
  // CFG-rescale factor phi in [0, 1] (0 = off).
  double rescale = 0.0;
};

class CFGDenoiser : public GuidanceRule {
 public:
  CFGDenoiser(DenoiserPtr inner, double scale);
  CFGDenoiser(DenoiserPtr inner, CFGOptions opt);

 protected:
  // The guided x0 from the two branches' x0 at scale w (here the CFG line
  // x0_neg + w (x0_cond - x0_neg)). Variants that change only how the
  // branches combine (APG, CFG-Zero*) override it and keep the rest: one
  // batched call, the negative condition, the scale schedule and interval,
  // CFG-rescale and the renoise eps.
  virtual torch::Tensor combine(const torch::Tensor& x0_cond, const torch::Tensor& x0_neg, double w,
                                const torch::Tensor& x, double s);

 private:
  Prediction guide(const torch::Tensor& x, double s, const Cond& c) override;
  CFGOptions opt_;
};

// The negative condition "class k" for class-label models: every label
// replaced by k (k = -1 is the null class, i.e. plain CFG).
std::function<Cond(const Cond&)> negative_class(int64_t k);

// The CFG part of guidance options (registered rule "cfg": --cfg,
// --negative-class or the attached "negative" condition, --cfg-rescale,
// --guidance-interval, --cfg-schedule) for a model of process p; PAG uses it
// for the CFG it does in the same call. Errors name the option.
class GuidanceOptions;
CFGOptions cfg_options(const GuidanceOptions& g, const Process& p);

}  // namespace tweedie
