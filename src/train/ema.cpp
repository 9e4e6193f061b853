// Exponential moving average of parameters with diffusers-style warm-up
// (see ema.h for the update and decay formulas). Verified in
// tests/test_train_data.cpp (TrainDataEMA): closed form after k updates with
// constant and warm-up decays, swap-in/out, and state save/restore.
#include "tweedie/train/ema.h"

#include <algorithm>
#include <cmath>

#include "tweedie/core/error.h"

namespace tweedie {

EMA::EMA(const torch::nn::Module& m, Options o) : o_(o) {
  check(o.decay >= 0 && o.decay <= 1, "EMA decay must be in [0, 1], got ", o.decay);
  check(o.min_decay >= 0 && o.min_decay <= o.decay, "EMA min_decay must be in [0, decay], got ", o.min_decay);
  check(o.inv_gamma > 0 && o.power > 0, "EMA warm-up needs inv_gamma > 0 and power > 0");
  torch::NoGradGuard ng;
  for (const auto& kv : m.named_parameters(true)) {
    const auto& p = kv.value();
    const auto dt = torch::promote_types(p.scalar_type(), torch::kFloat32);
    shadow_.emplace_back(kv.key(), p.detach().to(dt).clone());
  }
}

double EMA::decay_at(int64_t k) const {
  check(k >= 1, "EMA update index must be >= 1, got ", k);
  const double t = double(k - 1);
  double d = o_.decay;
  if (o_.warmup != Warmup::None) {
    if (t == 0) return 0.0;
    d = std::min(o_.decay, o_.warmup == Warmup::Ratio ? (1 + t) / (10 + t)
                                                       : 1 - std::pow(1 + t / o_.inv_gamma, -o_.power));
  }
  return std::max(d, o_.min_decay);
}

std::vector<torch::Tensor> EMA::params_of(const torch::nn::Module& m) const {
  auto named = m.named_parameters(true);
  check(named.size() == shadow_.size(), "EMA: the module has ", named.size(), " parameters, the average ",
        shadow_.size());
  std::vector<torch::Tensor> out;
  out.reserve(shadow_.size());
  size_t i = 0;
  for (const auto& kv : named) {
    check(kv.key() == shadow_[i].first, "EMA: parameter ", i, " is '", kv.key(), "', the average has '",
          shadow_[i].first, "'");
    check(kv.value().sizes() == shadow_[i].second.sizes(), "EMA: parameter '", kv.key(), "' has shape ",
          kv.value().sizes(), ", the average ", shadow_[i].second.sizes());
    out.push_back(kv.value());
    ++i;
  }
  return out;
}

void EMA::update(const torch::nn::Module& m) {
  check(!swapped_in(), "EMA: update() while the average is swapped in (call swap_out first)");
  auto ps = params_of(m);
  torch::NoGradGuard ng;
  const double d = decay_at(++k_);
  for (size_t i = 0; i < ps.size(); ++i) {
    auto& s = shadow_[i].second;
    s.mul_(d).add_(ps[i].detach().to(s.device(), s.scalar_type()), 1.0 - d);
  }
}

void EMA::copy_to(torch::nn::Module& m) const {
  auto ps = params_of(m);
  torch::NoGradGuard ng;
  for (size_t i = 0; i < ps.size(); ++i) ps[i].copy_(shadow_[i].second);
}

void EMA::swap_in(torch::nn::Module& m) {
  check(!swapped_in(), "EMA: already swapped in");
  auto ps = params_of(m);
  torch::NoGradGuard ng;
  for (auto& p : ps) backup_.push_back(p.detach().clone());
  for (size_t i = 0; i < ps.size(); ++i) ps[i].copy_(shadow_[i].second);
}

void EMA::swap_out(torch::nn::Module& m) {
  check(swapped_in(), "EMA: swap_out without swap_in");
  auto ps = params_of(m);
  torch::NoGradGuard ng;
  for (size_t i = 0; i < ps.size(); ++i) ps[i].copy_(backup_[i]);
  backup_.clear();
}

std::vector<std::pair<std::string, torch::Tensor>> EMA::state() const {
  std::vector<std::pair<std::string, torch::Tensor>> s;
  for (auto& [n, t] : shadow_) s.emplace_back("ema." + n, t);
  s.emplace_back("ema.updates", torch::tensor({k_}, torch::kInt64));
  return s;
}

void EMA::load_state(const std::function<const torch::Tensor*(const std::string&)>& lookup) {
  torch::NoGradGuard ng;
  for (auto& [n, t] : shadow_) {
    const torch::Tensor* v = lookup("ema." + n);
    check(v != nullptr, "EMA state lacks 'ema.", n, "'");
    check(v->sizes() == t.sizes(), "EMA state 'ema.", n, "' has shape ", v->sizes(), ", expected ", t.sizes());
    t.copy_(*v);
  }
  const torch::Tensor* k = lookup("ema.updates");
  check(k != nullptr && k->numel() == 1, "EMA state lacks 'ema.updates'");
  k_ = k->to(torch::kInt64).item<int64_t>();
}

}  // namespace tweedie
