// EMA: an exponential moving average of a module's parameters (Polyak &
// Juditsky 1992; used by every diffusion trainer since DDPM):
//   shadow <- d_k * shadow + (1 - d_k) * param      at the k-th update (k = 1, 2, ...)
// with the decay d_k of diffusers' EMAModel.get_decay (t = k - 1):
//   Warmup::None   d_k = decay
//   Warmup::Ratio  d_k = min(decay, (1 + t)/(10 + t)), and d_1 = 0
//   Warmup::Power  d_k = min(decay, 1 - (1 + t/inv_gamma)^-power), and d_1 = 0
//                  (crowsonkb's warm-up; inv_gamma = 1, power = 2/3 by default)
// then clamped below by min_decay. Parameters only (the networks here have no
// buffers that training changes). The shadow is kept in float32 (or the
// parameter's dtype if wider) on the parameter's device.
// Verified in tests/test_train_data.cpp (TrainDataEMA): k updates against a
// constant module equal the closed form p + prod(d_k) (p0 - p); swap-in/out
// round-trips; state save/restore reproduces the average exactly.
#pragma once
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

namespace tweedie {

enum class EMAWarmup { None, Ratio, Power };
struct EMAOptions {
  double decay = 0.9999;
  EMAWarmup warmup = EMAWarmup::Ratio;
  double inv_gamma = 1.0, power = 2.0 / 3.0;  // EMAWarmup::Power
  double min_decay = 0.0;
};

class EMA {
 public:
  using Warmup = EMAWarmup;
  using Options = EMAOptions;
  // Starts the average at the module's current parameters.
  explicit EMA(const torch::nn::Module& m, Options o = {});

  // One update from the module's current parameters (after an optimizer step).
  void update(const torch::nn::Module& m);
  double decay_at(int64_t k) const;  // the decay of the k-th update (1-based)
  int64_t updates() const { return k_; }

  // Load the averaged parameters into m (a module of the same architecture).
  void copy_to(torch::nn::Module& m) const;
  // Evaluate with the average: swap_in saves m's parameters and loads the
  // average; swap_out puts them back. update() is refused while swapped in.
  void swap_in(torch::nn::Module& m);
  void swap_out(torch::nn::Module& m);
  bool swapped_in() const { return !backup_.empty(); }

  // Averaged parameters by name.
  const std::vector<std::pair<std::string, torch::Tensor>>& shadow() const { return shadow_; }
  // State as named tensors ("ema.<param>", "ema.updates"), and back (Error on
  // a missing entry or a shape mismatch, naming it).
  std::vector<std::pair<std::string, torch::Tensor>> state() const;
  void load_state(const std::function<const torch::Tensor*(const std::string&)>& lookup);

 private:
  std::vector<torch::Tensor> params_of(const torch::nn::Module& m) const;  // checked against the shadow's names
  Options o_;
  int64_t k_ = 0;
  std::vector<std::pair<std::string, torch::Tensor>> shadow_;
  std::vector<torch::Tensor> backup_;
};

// Swaps the average in for a scope (evaluation, sample grids), out at its end.
class EMAScope {
 public:
  EMAScope(EMA& e, torch::nn::Module& m) : e_(e), m_(m) { e_.swap_in(m_); }
  ~EMAScope() { e_.swap_out(m_); }
  EMAScope(const EMAScope&) = delete;
  EMAScope& operator=(const EMAScope&) = delete;

 private:
  EMA& e_;
  torch::nn::Module& m_;
};

}  // namespace tweedie
