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
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/guide/classifier_guidance.h"
#include "tweedie/guide/guidance.h"

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

namespace tweedie {
namespace {

// The loss the options name: an attached "loss", or --loss-guidance KIND
// with the options that kind takes.
GuidanceLoss loss_of(const GuidanceOptions& g) {
  if (g.has("loss")) {
    check(!g.has("loss-guidance"), "give --loss-guidance or an attached loss, not both");
    return g.object<GuidanceLoss>("loss");
  }
  const std::string kind = g.text("loss-guidance");
  auto only_for = [&](const char* option, const char* k) {
    check(!g.has(option) || kind == k, "--", option, " is for --loss-guidance ", k);
  };
  only_for("loss-reference", "reference");
  only_for("loss-factor", "reference");
  only_for("loss-classifier", "classifier");
  only_for("loss-target", "brightness");
  if (kind == "classifier") {
    check(g.conditional, "--loss-guidance classifier needs ", g.condition_from);
    return classifier_loss(g.object<std::shared_ptr<Classifier>>("loss-classifier"));
  }
  if (kind == "brightness") return brightness_loss(g.number("loss-target"));
  if (kind == "reference") {
    check(g.has("loss-reference"), "--loss-guidance reference needs --loss-reference IMAGE");
    const torch::Tensor ref = g.object<torch::Tensor>("loss-reference");
    check(ref.dim() >= 1 && ref.size(0) == 1, "--loss-reference: give one image (", g.text("loss-reference"), " holds ",
          ref.dim() ? ref.size(0) : 0, ")");
    const int64_t f = int64_t(g.number("loss-factor"));
    check(f == 1 || (ref.dim() == 4 && ref.size(2) % f == 0 && ref.size(3) % f == 0), "--loss-factor ", f,
          " must divide the model's image size (", c10::IntArrayRef(ref.sizes()).slice(1), ")");
    return reference_loss(ref[0], f);
  }
  fail("--loss-guidance: unknown loss '", kind, "' (classifier, brightness, reference)");
}

DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions& g, const std::shared_ptr<NetDenoiser>&) {
  return std::make_shared<LossGuidanceDenoiser>(std::move(inner), loss_of(g), g.number("loss-scale"));
}

std::string describe(const GuidanceOptions& g) {
  std::ostringstream o;
  o << ", loss guidance " << g.number("loss-scale") << " (";
  const std::string kind = g.has("loss") ? "attached" : g.text("loss-guidance");
  o << kind;
  if (kind == "brightness") o << " " << g.number("loss-target");
  if (kind == "reference") {
    o << " " << g.text("loss-reference");
    if (g.number("loss-factor") > 1) o << " pooled " << g.number("loss-factor");
  }
  o << ")";
  return o.str();
}

bool on(const GuidanceOptions& g) { return g.has("loss-guidance") || g.has("loss"); }

GuidanceRuleRegistrar reg(
    GuidanceRuleInfo{"loss-guidance", "score - s grad_{x_t} L(x0_hat) through the denoiser",
                     "Bansal et al. 2023 (universal guidance)", 50, build, describe}
        .option(MethodOption::text("loss-guidance", "",
                                   "loss guidance on x0_hat (universal guidance): classifier (cross-entropy for the "
                                   "class), brightness (mean pixel -> --loss-target) or reference (squared distance to "
                                   "--loss-reference after --loss-factor pooling)"))
        .option(MethodOption{"loss-scale", 1, "loss guidance scale"})
        .option(MethodOption{"loss-target", 0, "target mean pixel of --loss-guidance brightness"}.in(-1, 1))
        .option(MethodOption::text("loss-classifier", "the evaluation classifier",
                                   "classifier of clean images for --loss-guidance classifier"))
        .option(MethodOption::text("loss-reference", "",
                                   "reference image (.png or .npy [1, ...] of the model's sample shape) for "
                                   "--loss-guidance reference"))
        .option(MethodOption{"loss-factor", 1,
                             "average-pooling factor of --loss-guidance reference (1 = the full image, 4 = its "
                             "4x4-block layout)"}
                    .at_least(1)
                    .whole())
        .attachment("loss")
        .loads("loss-classifier", GuidanceResource::Classifier)
        .loads("loss-reference", GuidanceResource::Image)
        .on_when(on));

}  // namespace
}  // namespace tweedie
