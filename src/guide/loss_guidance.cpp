// Loss guidance (Bansal et al. 2023, universal guidance's forward step):
//   score_guided = score - s grad_{x_t} L(x0_hat(x_t))
// with autograd through the denoiser (loss_guidance.h). Verified in
// tests/test_guidance.cpp: on the Gaussian mixture the guided eps equals
// eps + s sigma_t grad_{x_t} L with the gradient of the exact posterior mean
// taken by finite differences, and on the default model the classifier loss
// raises the target class's probability and the brightness loss moves the
// mean pixel toward its target; the reference loss has its closed-form value
// and pulls samples toward a reference image's layout.
#include "tweedie/guide/loss_guidance.h"

#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/guide/classifier_guidance.h"

namespace tweedie {

GuidanceLoss classifier_loss(std::shared_ptr<Classifier> clf) {
  check(clf != nullptr, "classifier loss: no classifier");
  check(!clf->time_conditional(), "classifier loss: it judges the clean estimate x0, so it needs a classifier of clean "
                                  "images, not a noise-conditional one");
  return [clf](const torch::Tensor& x0, const Cond& c) {
    check(c.labels.defined() && c.labels.numel() == x0.size(0), "classifier loss needs a class label per sample");
    auto y = c.labels.reshape({-1}).to(torch::kInt64);
    check(y.max().item<int64_t>() < clf->num_classes(), "classifier loss: class ", y.max().item<int64_t>(),
          " is beyond the classifier's ", clf->num_classes(), " classes");
    auto logp = torch::log_softmax(clf->forward(x0.to(torch::kFloat32), {}, {}), 1);
    auto nll = -logp.gather(1, y.clamp_min(0).unsqueeze(1)).squeeze(1);
    return (nll * (y >= 0).to(nll.dtype())).to(x0.scalar_type());
  };
}

GuidanceLoss brightness_loss(double target) {
  check(std::isfinite(target), "brightness loss: the target must be finite (got ", target, ")");
  return [target](const torch::Tensor& x0, const Cond&) { return (x0.reshape({x0.size(0), -1}).mean(1) - target).pow(2); };
}

GuidanceLoss reference_loss(const torch::Tensor& ref, int64_t factor) {
  check(ref.defined() && ref.numel() > 0, "reference loss: no reference");
  check(torch::isfinite(ref).all().item<bool>(), "reference loss: the reference has non-finite values");
  check(factor >= 1, "reference loss: the pooling factor must be >= 1 (got ", factor, ")");
  if (factor > 1) {
    check(ref.dim() == 3 || ref.dim() == 4, "reference loss: pooling needs an image [C, H, W], got ", ref.sizes());
    check(ref.size(-1) % factor == 0 && ref.size(-2) % factor == 0, "reference loss: factor ", factor,
          " does not divide the reference's ", ref.size(-2), "x", ref.size(-1));
  }
  auto pool = [factor](const torch::Tensor& t) {
    return factor == 1 ? t : torch::avg_pool2d(t.dim() == 3 ? t.unsqueeze(0) : t, {factor, factor});
  };
  const torch::Tensor r = pool(ref.to(torch::kFloat64));
  const bool per_sample = ref.dim() == 4;
  const auto sample_shape = per_sample ? ref.sizes().slice(1) : ref.sizes();
  return [r, pool, per_sample, sample_shape = sample_shape.vec()](const torch::Tensor& x0, const Cond&) {
    check(x0.sizes().slice(1) == c10::IntArrayRef(sample_shape), "reference loss: samples ", x0.sizes().slice(1),
          " do not match the reference ", c10::IntArrayRef(sample_shape));
    check(!per_sample || r.size(0) == x0.size(0), "reference loss: ", r.size(0), " references for ", x0.size(0),
          " samples");
    auto d = pool(x0) - r.to(x0.scalar_type());
    return d.pow(2).reshape({x0.size(0), -1}).mean(1);
  };
}

LossGuidanceDenoiser::LossGuidanceDenoiser(DenoiserPtr inner, GuidanceLoss loss, double scale)
    : GuidanceRule(std::move(inner)), loss_(std::move(loss)), scale_(scale) {
  check(inner_denoiser() != nullptr && loss_, "loss guidance needs a model and a loss");
  check(std::isfinite(scale_), "loss guidance scale must be finite (got ", scale_, ")");
}

Prediction LossGuidanceDenoiser::guide(const torch::Tensor& x, double s, const Cond& c) {
  if (scale_ == 0) return inner(x, s, c);
  torch::AutoGradMode grad_on(true);
  auto xg = x.detach().requires_grad_(true);
  Prediction p = inner(xg, s, c);
  auto loss = loss_(p.x0(), c);
  check(loss.dim() == 1 && loss.size(0) == x.size(0), "loss guidance: the loss must give one value per sample, got ",
        loss.sizes());
  auto grad_x = torch::autograd::grad({loss.sum()}, {xg})[0];
  const double m = process().model_scale(s);
  Prediction plain = Prediction::from_x0(p.x0().detach(), x, s, process());
  Prediction out = add_score(plain, grad_x / m, -scale_, process());  // grad_{x_t} = grad_x / model_scale
  return out;
}

}  // namespace tweedie
