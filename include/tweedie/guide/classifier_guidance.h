// Classifier guidance (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs
// on Image Synthesis", Algorithm 2): sample from p(x) p(y | x)^s with a
// noise-conditional classifier p(y | x_t, t) (models/classifier.h,
// time_conditional), by adding its gradient to the score:
//   score_guided = score + s grad_{x_t} log p(y | x_t, t),
// i.e. in eps form, eps_guided = eps - s sigma_t grad_{x_t} log p(y | x_t, t)
// (score = -eps / sigma_t, process/prediction.h; the paper's
// eps - sqrt(1 - abar_t) s grad). x_t = model_scale(s) x is the model-space
// state (process.h) and t the model time, the classifier's inputs. In
// tweedie's sampling space (x = x_t / model_scale, noise level
// s_level = sigma_t / model_scale, and grad_x = model_scale grad_{x_t}) the
// same rule reads
//   eps_guided = eps - s * s_level * grad_x log p(y | model_scale x, t).
// The code does not convert by hand: the guided Prediction is built from
// score_guided (add_score: a Prediction of kind Score), and Prediction turns
// it into eps and x0 (process/prediction.cpp: eps = -sigma_t score).
//
// y is each row's class label; rows without a class (the null class, -1)
// are left alone, so inside CFG only the conditional branch would move;
// make_guidance puts it outside CFG (on the guided prediction, as in the
// paper's combination with conditional models). The classifier must have
// been trained on the model's process (its "tweedie.process" metadata), with
// the model's classes and sample shape. s = 0 is not built.
// Verified in tests/test_guidance.cpp (ClassifierGuidance suite).
#pragma once
#include <memory>

#include "tweedie/guide/guidance_rule.h"
#include "tweedie/models/classifier.h"
#include "tweedie/models/denoiser.h"

namespace tweedie {

// p with its score moved by scale * grad (grad = a gradient w.r.t. the
// model-space state x_t of a log-density): Prediction of kind Score
// p.score() + scale * grad (the rules that use it carry p's auxiliary
// fields as every GuidanceRule does).
Prediction add_score(const Prediction& p, const torch::Tensor& grad, double scale, const Process& proc);

class ClassifierGuidanceDenoiser : public GuidanceRule {
 public:
  ClassifierGuidanceDenoiser(DenoiserPtr inner, std::shared_ptr<Classifier> classifier, double scale);

  // grad_{x_t} sum_i log p(y_i | x_t_i, t) for rows with y_i >= 0 (0 elsewhere).
  torch::Tensor log_prob_gradient(const torch::Tensor& x, double s, const torch::Tensor& labels);

 private:
  Prediction guide(const torch::Tensor& x, double s, const Cond& c) override;
  std::shared_ptr<Classifier> clf_;
  double scale_;
};

}  // namespace tweedie
