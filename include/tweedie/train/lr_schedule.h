// Learning-rate schedules as pure functions of the step (so a resumed run needs
// only the step count): linear warm-up, then constant or cosine decay to a
// floor (SGDR, Loshchilov & Hutter 2017, without restarts):
//   step < warmup:  lr * (step + 1) / warmup
//   constant:       lr
//   cosine:         min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2,
//                   p = min(1, (step - warmup) / (total - warmup))
// step is the 0-based index of the optimizer step about to be taken (the first
// warm-up step is lr / warmup, not 0). Verified in tests/test_train_data.cpp
// (TrainDataLR) against these closed forms, and its validation messages.
#pragma once
#include <cstdint>
#include <string>

namespace tweedie {

struct LRSchedule {
  enum class Kind { Constant, Cosine };
  Kind kind = Kind::Cosine;
  double lr = 1e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;  // cosine: the decay reaches min_lr here
  double min_lr = 0.0;      // cosine floor

  void validate() const;  // Error naming the first impossible value
};

LRSchedule::Kind lr_kind_from_string(const std::string& s);  // "constant", "cosine"
std::string to_string(LRSchedule::Kind k);
double lr_at(const LRSchedule& s, int64_t step);

}  // namespace tweedie
