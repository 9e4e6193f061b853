// AdamW with checkpointable state, and global gradient-norm clipping (see adamw.h).
#include "tweedie/train/adamw.h"

#include <cmath>

#include "tweedie/core/error.h"

namespace tweedie {

AdamW::AdamW(std::vector<std::pair<std::string, torch::Tensor>> params, Options o) : params_(std::move(params)), o_(o) {
  for (auto& [n, p] : params_) {
    m_.push_back(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    v_.push_back(torch::zeros_like(p, torch::MemoryFormat::Preserve));
  }
}

void AdamW::zero_grad() {
  for (auto& [n, p] : params_)
    if (p.grad().defined()) p.mutable_grad().zero_();
}

void AdamW::step(double lr) {
  torch::NoGradGuard ng;
  ++t_;
  const double bc1 = 1 - std::pow(o_.beta1, double(t_)), bc2 = 1 - std::pow(o_.beta2, double(t_));
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i].second;
    if (!p.grad().defined()) continue;
    const auto& g = p.grad();
    m_[i].mul_(o_.beta1).add_(g, 1 - o_.beta1);
    v_[i].mul_(o_.beta2).addcmul_(g, g, 1 - o_.beta2);
    if (o_.weight_decay != 0) p.mul_(1 - lr * o_.weight_decay);
    auto denom = (v_[i] / bc2).sqrt_().add_(o_.eps);
    p.addcdiv_(m_[i], denom, -lr / bc1);
  }
}

std::vector<std::pair<std::string, torch::Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, torch::Tensor>> s;
  for (size_t i = 0; i < params_.size(); ++i) {
    s.emplace_back(params_[i].first + ".exp_avg", m_[i]);
    s.emplace_back(params_[i].first + ".exp_avg_sq", v_[i]);
  }
  s.emplace_back("adamw.step", torch::tensor({t_}, torch::kInt64));
  return s;
}

void AdamW::load_state(const std::function<const torch::Tensor*(const std::string&)>& lookup) {
  torch::NoGradGuard ng;
  for (size_t i = 0; i < params_.size(); ++i) {
    for (auto [suffix, dst] : {std::pair<const char*, torch::Tensor*>{".exp_avg", &m_[i]}, {".exp_avg_sq", &v_[i]}}) {
      const torch::Tensor* t = lookup(params_[i].first + suffix);
      check(t != nullptr, "optimizer state lacks '", params_[i].first, suffix, "'");
      check(t->sizes() == dst->sizes(), "optimizer state '", params_[i].first, suffix, "' has shape ", t->sizes(),
            ", expected ", dst->sizes());
      dst->copy_(*t);
    }
  }
  const torch::Tensor* st = lookup("adamw.step");
  check(st != nullptr && st->numel() == 1, "optimizer state lacks 'adamw.step'");
  t_ = st->to(torch::kInt64).item<int64_t>();
}

double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard ng;
  double total = 0;
  for (auto& p : params)
    if (p.grad().defined()) total += p.grad().to(torch::kFloat64).pow(2).sum().item<double>();
  total = std::sqrt(total);
  if (max_norm > 0 && total > max_norm) {
    const double scale = max_norm / (total + 1e-6);
    for (auto& p : params)
      if (p.grad().defined()) p.mutable_grad().mul_(scale);
  }
  return total;
}

}  // namespace tweedie
