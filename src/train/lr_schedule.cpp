// Learning-rate schedules: linear warm-up, then constant or cosine decay to a
// floor, as a pure function of the step (formulas in lr_schedule.h). Verified
// in tests/test_train_data.cpp (TrainDataLR) against the closed forms.
#include "tweedie/train/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "tweedie/core/error.h"

namespace tweedie {

LRSchedule::Kind lr_kind_from_string(const std::string& s) {
  if (s == "constant") return LRSchedule::Kind::Constant;
  if (s == "cosine") return LRSchedule::Kind::Cosine;
  fail("unknown learning-rate schedule '", s, "' (known: constant, cosine)");
}

std::string to_string(LRSchedule::Kind k) { return k == LRSchedule::Kind::Constant ? "constant" : "cosine"; }

void LRSchedule::validate() const {
  check(lr > 0 && std::isfinite(lr), "learning rate must be > 0, got ", lr);
  check(warmup_steps >= 0, "warm-up steps must be >= 0, got ", warmup_steps);
  if (kind == Kind::Cosine) {
    check(total_steps > warmup_steps, "cosine schedule: total steps (", total_steps,
          ") must exceed the warm-up steps (", warmup_steps, ")");
    check(min_lr >= 0 && min_lr <= lr, "cosine schedule: min_lr must be in [0, lr], got ", min_lr);
  }
}

double lr_at(const LRSchedule& s, int64_t step) {
  s.validate();
  check(step >= 0, "learning-rate schedule: step must be >= 0, got ", step);
  if (step < s.warmup_steps) return s.lr * double(step + 1) / double(s.warmup_steps);
  if (s.kind == LRSchedule::Kind::Constant) return s.lr;
  const double p = std::min(1.0, double(step - s.warmup_steps) / double(s.total_steps - s.warmup_steps));
  return s.min_lr + (s.lr - s.min_lr) * 0.5 * (1.0 + std::cos(M_PI * p));
}

}  // namespace tweedie
