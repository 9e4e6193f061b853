// AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"):
//   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
//   p -= lr * wd * p,  p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// Written out (not torch::optim) so its state is plain named tensors that a
// checkpoint stores and restores exactly. Verified against the closed form of
// the first steps in tests/test_trainer.cpp.
#pragma once
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace tweedie {

class AdamW {
 public:
  struct Options {
    double lr = 1e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  };
  AdamW(std::vector<std::pair<std::string, torch::Tensor>> params, Options o);
  void zero_grad();
  void step(double lr);  // one update with this learning rate
  int64_t steps() const { return t_; }
  // State as named tensors ("<param>.exp_avg", "<param>.exp_avg_sq", "adamw.step").
  std::vector<std::pair<std::string, torch::Tensor>> state() const;
  void load_state(const std::function<const torch::Tensor*(const std::string&)>& lookup);

 private:
  std::vector<std::pair<std::string, torch::Tensor>> params_;
  std::vector<torch::Tensor> m_, v_;
  Options o_;
  int64_t t_ = 0;
};

// Scale gradients so their global L2 norm is at most max_norm; returns the norm before clipping.
double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);

}  // namespace tweedie
