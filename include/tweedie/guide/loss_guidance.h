// Loss guidance: universal guidance's forward step (Bansal et al. 2023,
// "Universal Guidance for Diffusion Models", Eq. 6; also Song et al. 2023,
// "Loss-Guided Diffusion Models"). A differentiable loss L on Tweedie's
// estimate x0_hat(x_t) steers sampling toward p(x) exp(-s L(x0_hat)):
//   eps_guided = eps + s sqrt(1 - abar_t) grad_{x_t} L(x0_hat(x_t)),
// i.e. on the score (eps = -sigma_t score, sigma_t = sqrt(1 - abar_t) for VP):
//   score_guided = score - s grad_{x_t} L(x0_hat(x_t)).
// The gradient runs by autograd through the denoiser (every rule inside it,
// CFG included), taken w.r.t. the sampling-space state x and turned into
// grad_{x_t} = grad_x / model_scale(s) (x_t = model_scale(s) x, process.h);
// in sampling space the rule is eps_guided = eps + s * s_level * grad_x L.
// The guided Prediction is built from score_guided (add_score,
// classifier_guidance.h), so Prediction does the conversion. The scale is
// the paper's constant s(t) = s: the sigma_t factor in eps form is the whole
// time dependence. s = 0 is not built.
//
// Built-in losses, per sample ([N]; usable from the CLI, --loss-guidance):
//   classifier   cross-entropy of a classifier of clean images (the
//                evaluation classifier) on x0_hat for the row's class label
//                (0 on null-class rows);
//   brightness   (mean(x0_hat) - target)^2, the mean over the sample's pixels;
//   reference    mean((P_f x0_hat - P_f ref)^2): squared distance to a
//                reference image after f x f average pooling P_f (f = 1:
//                the image itself; f > 1 asks only for its coarse layout,
//                the gradient form of ILVR's low-pass conditioning).
// Verified in tests/test_guidance.cpp (LossGuidance suite): the guided eps
// against the formula with a hand gradient on a Gaussian mixture, and on the
// default model both losses move the samples the way they should.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "tweedie/guide/guidance_rule.h"
#include "tweedie/models/classifier.h"
#include "tweedie/models/denoiser.h"

namespace tweedie {

// Per-sample loss [N] of the denoised estimate x0 [N, ...] under condition c.
using GuidanceLoss = std::function<torch::Tensor(const torch::Tensor& x0, const Cond& c)>;

GuidanceLoss classifier_loss(std::shared_ptr<Classifier> classifier);
GuidanceLoss brightness_loss(double target);
// ref: [C, H, W] (every sample) or [N, C, H, W] (one per sample); factor
// divides H and W. A flat sample shape [D] needs factor 1.
GuidanceLoss reference_loss(const torch::Tensor& ref, int64_t factor = 1);

class LossGuidanceDenoiser : public GuidanceRule {
 public:
  LossGuidanceDenoiser(DenoiserPtr inner, GuidanceLoss loss, double scale);

 private:
  Prediction guide(const torch::Tensor& x, double s, const Cond& c) override;
  GuidanceLoss loss_;
  double scale_;
};

}  // namespace tweedie
