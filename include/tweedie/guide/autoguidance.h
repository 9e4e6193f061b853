// AutoGuidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad
// Version of Itself"): guidance away from a weaker model of the same task
// (smaller and/or shorter trained) instead of the unconditional model, both
// given the same condition:
//   x0 = x0_bad(c) + w (x0_good(c) - x0_bad(c))
// (the paper's D_w(x; sigma, c) = D_0 + w (D_1 - D_0); affine at a fixed
// state, so the same in eps, x0 or v). w = 1 is the good model alone and is
// not built; unconditional rows (the null class) are guided like the others,
// so under CFG both branches are autoguided before CFG combines them.
// The two models may differ in architecture and parameterization but must
// share the process and sample shape (and classes, for class models):
// check_guide_model says which differs. Two calls per evaluation (two
// networks). Verified in tests/test_guidance.cpp (AutoGuidance suite): the
// formula against the two models evaluated separately, the good model as its
// own guide is the good model bit for bit, mismatched guides are an Error.
#pragma once
#include <string>

#include "tweedie/guide/guidance_rule.h"
#include "tweedie/models/denoiser.h"

namespace tweedie {

// Error "<what>: ..." unless the guide can guide the model: same process,
// and (where known, non-empty / >= 0) the same sample shape and class count.
void check_guide_model(const Denoiser& model, const std::vector<int64_t>& model_shape, int64_t model_classes,
                       const Denoiser& guide, const std::vector<int64_t>& guide_shape, int64_t guide_classes,
                       const std::string& what);

class AutoGuidanceDenoiser : public GuidanceRule {
 public:
  AutoGuidanceDenoiser(DenoiserPtr good, DenoiserPtr bad, double w);

 private:
  Prediction guide(const torch::Tensor& x, double s, const Cond& c) override;
  DenoiserPtr bad_;
  double w_;
};

}  // namespace tweedie
