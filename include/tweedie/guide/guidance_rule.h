// GuidanceRule: the base of every guidance rule that wraps an inner Denoiser
// (CFG, PAG, SAG, AutoGuidance, loss and classifier guidance, dynamic
// thresholding). A rule implements guide() and calls inner() for the inner
// prediction; predict() runs guide() and then carries the auxiliary fields of
// the rule's first inner prediction (Prediction::carry_aux: today CFG++'s
// renoise eps) into the result where the rule set none of its own. So a rule
// composed outside CFG++ guidance never drops what the sampler needs, and a
// new rule does not forward anything by hand.
// Verified in tests/test_guidance.cpp (GuidanceRule*).
#pragma once
#include <optional>

#include "tweedie/models/denoiser.h"

namespace tweedie {

class GuidanceRule : public Denoiser {
 public:
  explicit GuidanceRule(DenoiserPtr inner);
  const Process& process() const override { return inner_->process(); }
  Prediction predict(const torch::Tensor& x, double s, const Cond& c) final;

 protected:
  virtual Prediction guide(const torch::Tensor& x, double s, const Cond& c) = 0;
  // The inner denoiser's prediction (the first one of each predict() is the
  // one whose auxiliary fields are carried).
  Prediction inner(const torch::Tensor& x, double s, const Cond& c);
  const DenoiserPtr& inner_denoiser() const { return inner_; }

 private:
  DenoiserPtr inner_;
  std::optional<Prediction::Aux> first_aux_;
  bool in_predict_ = false;
};

}  // namespace tweedie
