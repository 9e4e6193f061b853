// Private to src/train: the step count, training time and loss log that every
// trainer checkpoints (as "train.*" tensors), resumes and plots.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "tweedie/io/safetensors.h"
#include "tweedie/train/trainer.h"

namespace tweedie::detail {

struct TrainLog {
  int64_t step = 0;          // steps completed
  double train_seconds = 0;  // over every run of this training
  std::vector<double> loss_steps, loss_values;  // logged (step, mean loss since the last entry)
  double log_sum = 0;                           // losses since the last entry
  int64_t log_n = 0;

  // After a step (step already counted): add its loss; an entry every
  // log_every steps and at the last step.
  void record(double loss, int64_t log_every, int64_t total_steps);
  void append_tensors(std::vector<std::pair<std::string, torch::Tensor>>& t) const;
  void load_tensors(const SafeTensors& ck);
  // The training loop of every trainer: until total_steps, one_step() (which
  // counts the step and returns its loss) at the learning rate lr() read
  // before it, then the time and the log, after_step() (checkpoints,
  // pictures) and progress (images/s since this call).
  void run(int64_t total_steps, int64_t log_every, int64_t batch_size, const std::function<double()>& lr,
           const std::function<double()>& one_step, const std::function<void()>& after_step,
           const std::function<void(const TrainStats&)>& progress);
  // The loss curve (log scale) as a PNG, if anything is logged.
  void plot_loss(const std::string& path, const std::string& title, int64_t log_every) const;
};

}  // namespace tweedie::detail
