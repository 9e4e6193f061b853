// GuidanceRule (guide/guidance_rule.h): auxiliary fields carried through.
#include "tweedie/guide/guidance_rule.h"

#include "tweedie/core/error.h"

namespace tweedie {

// Each rule checks its inner model itself (with its own message).
GuidanceRule::GuidanceRule(DenoiserPtr inner) : inner_(std::move(inner)) {}

Prediction GuidanceRule::inner(const torch::Tensor& x, double s, const Cond& c) {
  Prediction p = inner_->predict(x, s, c);
  if (in_predict_ && !first_aux_) first_aux_ = p.aux();
  return p;
}

Prediction GuidanceRule::predict(const torch::Tensor& x, double s, const Cond& c) {
  first_aux_.reset();
  in_predict_ = true;
  struct Done {
    bool& flag;
    ~Done() { flag = false; }
  } done{in_predict_};
  Prediction out = guide(x, s, c);
  if (first_aux_) out.carry_aux(*first_aux_);
  first_aux_.reset();
  return out;
}

}  // namespace tweedie
