// Classifier guidance (Dhariwal & Nichol 2021):
//   score_guided = score + s grad_{x_t} log p(y | x_t, t)
// (classifier_guidance.h). Verified in tests/test_guidance.cpp: the guided
// eps equals eps - s sigma_t grad_{x_t} log p computed by hand, null-class
// rows are unchanged, on the default model with the shipped noisy
// classifier guided samples raise the target class's probability under the
// evaluation classifier, and mismatched classifiers are an Error.
#include "tweedie/guide/classifier_guidance.h"

#include <cmath>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/guide/guidance.h"

namespace tweedie {

Prediction add_score(const Prediction& p, const torch::Tensor& grad, double scale, const Process& proc) {
  return Prediction({PredKind::Score}, p.score() + grad * scale, p.x(), p.s(), proc);
}

ClassifierGuidanceDenoiser::ClassifierGuidanceDenoiser(DenoiserPtr inner, std::shared_ptr<Classifier> classifier,
                                                       double scale)
    : GuidanceRule(std::move(inner)), clf_(std::move(classifier)), scale_(scale) {
  check(inner_denoiser() != nullptr && clf_ != nullptr, "classifier guidance needs a model and a classifier");
  check(std::isfinite(scale_), "classifier guidance scale must be finite (got ", scale_, ")");
  check(clf_->time_conditional(),
        "classifier guidance needs a noise-conditional classifier (trained with noise_process), not one of clean images");
}

torch::Tensor ClassifierGuidanceDenoiser::log_prob_gradient(const torch::Tensor& x, double s,
                                                            const torch::Tensor& labels) {
  check(labels.defined() && labels.numel() == x.size(0), "classifier guidance needs a class label per sample");
  check(labels.max().item<int64_t>() < clf_->num_classes(), "classifier guidance: class ",
        labels.max().item<int64_t>(), " is beyond the classifier's ", clf_->num_classes(), " classes");
  torch::AutoGradMode grad_on(true);
  const Process& p = process();
  auto xt = (x.detach() * p.model_scale(s)).to(torch::kFloat32).requires_grad_(true);
  auto t = torch::full({x.size(0)}, p.t_of(s), torch::kFloat32);
  auto logp = torch::log_softmax(clf_->forward(xt, t, {}), 1);
  auto y = labels.reshape({-1}).to(torch::kInt64);
  auto real = y >= 0;
  auto picked = logp.gather(1, y.clamp_min(0).unsqueeze(1)).squeeze(1) * real.to(logp.dtype());
  return torch::autograd::grad({picked.sum()}, {xt})[0].to(x.scalar_type());
}

Prediction ClassifierGuidanceDenoiser::guide(const torch::Tensor& x, double s, const Cond& c) {
  Prediction p = inner(x, s, c);
  if (scale_ == 0) return p;
  return add_score(p, log_prob_gradient(x, s, c.labels), scale_, process());
}

}  // namespace tweedie

namespace tweedie {
namespace {

DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions& g, const std::shared_ptr<NetDenoiser>&) {
  return std::make_shared<ClassifierGuidanceDenoiser>(
      std::move(inner), g.object<std::shared_ptr<Classifier>>("guide-classifier"), g.number("classifier-guidance"));
}

std::string describe(const GuidanceOptions& g) {
  std::ostringstream o;
  o << ", classifier guidance " << g.number("classifier-guidance");
  return o.str();
}

// Outside loss guidance: no gradient through the denoiser.
GuidanceRuleRegistrar reg(GuidanceRuleInfo{"classifier-guidance", "score + s grad log p(y | x_t) of a noisy classifier",
                                           "Dhariwal & Nichol 2021", 60, build, describe}
                              .option(MethodOption{"classifier-guidance", 0,
                                                   "classifier guidance scale with a noise-conditional classifier"})
                              .option(MethodOption::text("guide-classifier",
                                                         "models/fashion_mnist_noisy_classifier.safetensors",
                                                         "noise-conditional classifier for --classifier-guidance"))
                              .loads("guide-classifier", GuidanceResource::NoisyClassifier)
                              .needs_condition()
                              .on_class_labels());

}  // namespace
}  // namespace tweedie
