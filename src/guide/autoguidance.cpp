// AutoGuidance (Karras et al. 2024): x0 = x0_bad(c) + w (x0_good(c) - x0_bad(c))
// (autoguidance.h). Verified in tests/test_guidance.cpp: the formula against
// the two models evaluated separately, a model guiding itself is itself bit
// for bit at every w, and guides of another process, shape or class count
// are an Error naming the guide.
#include "tweedie/guide/autoguidance.h"

#include <cmath>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/guide/guidance.h"

namespace tweedie {

void check_guide_model(const Denoiser& model, const std::vector<int64_t>& model_shape, int64_t model_classes,
                       const Denoiser& guide, const std::vector<int64_t>& guide_shape, int64_t guide_classes,
                       const std::string& what) {
  check(guide.process().name() == model.process().name(), what, ": process ", guide.process().name(),
        " differs from the model's ", model.process().name());
  check(model_shape.empty() || guide_shape.empty() || model_shape == guide_shape, what, ": samples of shape ",
        c10::IntArrayRef(guide_shape), " differ from the model's ", c10::IntArrayRef(model_shape));
  check(model_classes < 0 || guide_classes < 0 || model_classes == guide_classes, what, ": ", guide_classes,
        " classes, the model has ", model_classes);
}

AutoGuidanceDenoiser::AutoGuidanceDenoiser(DenoiserPtr good, DenoiserPtr bad, double w)
    : GuidanceRule(std::move(good)), bad_(std::move(bad)), w_(w) {
  check(inner_denoiser() != nullptr && bad_ != nullptr, "AutoGuidance needs a model and a guide model");
  check(std::isfinite(w_), "AutoGuidance scale must be finite (got ", w_, ")");
  check(process().name() == bad_->process().name(), "AutoGuidance: the guide model's process ",
        bad_->process().name(), " differs from the model's ", process().name());
}

Prediction AutoGuidanceDenoiser::guide(const torch::Tensor& x, double s, const Cond& c) {
  Prediction good = inner(x, s, c);
  if (w_ == 1.0) return good;
  auto bad = bad_->predict(x, s, c).x0();
  return Prediction::from_x0(bad + (good.x0() - bad) * w_, x, s, process());
}

}  // namespace tweedie

namespace tweedie {
namespace {

DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions& g, const std::shared_ptr<NetDenoiser>&) {
  check(g.has("guide-model"), "--autoguidance and --guide-model go together");
  return std::make_shared<AutoGuidanceDenoiser>(std::move(inner), g.object<DenoiserPtr>("guide-model"),
                                                g.number("autoguidance"));
}

std::string describe(const GuidanceOptions& g) {
  std::ostringstream o;
  o << ", AutoGuidance " << g.number("autoguidance");
  if (!g.text("guide-model").empty()) o << " from " << g.text("guide-model");
  return o.str();
}

GuidanceRuleRegistrar reg(GuidanceRuleInfo{"autoguidance", "guidance by a weaker version of the model itself",
                                           "Karras et al. 2024", 30, build, describe}
                              .option(MethodOption{"autoguidance", 1,
                                                   "AutoGuidance w: x0_bad + w (x0 - x0_bad); needs --guide-model"})
                              .option(MethodOption::text("guide-model", "",
                                                         "AutoGuidance's weaker model file (same process and sample shape)"))
                              .loads("guide-model", GuidanceResource::Model)
                              .off_at(1)
                              .off_message("needs --autoguidance (--autoguidance and --guide-model go together)"));

}  // namespace
}  // namespace tweedie
