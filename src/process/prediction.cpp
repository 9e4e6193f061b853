// Conversions between parameterizations. The only file that converts eps,
// x0, v, velocity, score and EDM's F into one another (see prediction.h).
#include "tweedie/process/prediction.h"

#include <cmath>

#include "tweedie/core/error.h"

namespace tweedie {

PredKind pred_kind_from_string(const std::string& s) {
  if (s == "eps" || s == "epsilon") return PredKind::Eps;
  if (s == "x0" || s == "sample") return PredKind::X0;
  if (s == "v" || s == "v_prediction") return PredKind::V;
  if (s == "velocity" || s == "flow") return PredKind::Velocity;
  if (s == "score") return PredKind::Score;
  if (s == "edm") return PredKind::EDM;
  fail("unknown prediction '", s, "' (known: eps, x0, v, velocity, score, edm)");
}

std::string to_string(PredKind k) {
  switch (k) {
    case PredKind::Eps: return "eps";
    case PredKind::X0: return "x0";
    case PredKind::V: return "v";
    case PredKind::Velocity: return "velocity";
    case PredKind::Score: return "score";
    case PredKind::EDM: return "edm";
  }
  return "?";
}

double Parameterization::c_in(double s) const {
  return kind == PredKind::EDM ? 1.0 / std::sqrt(s * s + sigma_data * sigma_data) : 1.0;
}
double Parameterization::c_skip(double s) const {
  double sd2 = sigma_data * sigma_data;
  return sd2 / (s * s + sd2);
}
double Parameterization::c_out(double s) const {
  return s * sigma_data / std::sqrt(s * s + sigma_data * sigma_data);
}

Prediction::Prediction(const Parameterization& p, torch::Tensor value, torch::Tensor x, double s, const Process& proc)
    : x_(std::move(x)), s_(s), a_(proc.a(s)), scale_(proc.model_scale(s)) {
  const double al = a_ * scale_, sg = s * scale_;  // alpha_t, sigma_t
  switch (p.kind) {
    case PredKind::X0: x0_ = std::move(value); break;
    case PredKind::Eps:
      check(a_ > 0, "eps prediction is undefined at a(s) = 0 (flow t = 1)");
      x0_ = (x_ - value * s) / a_;
      eps_ = std::move(value);
      break;
    case PredKind::V: {
      // x_t = scale * x; x0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2)
      x0_ = (x_ * (al * scale_) - value * sg) / (al * al + sg * sg);
      break;
    }
    case PredKind::Velocity: x0_ = (x_ - value * s) / (a_ + s); break;
    case PredKind::Score:
      // eps = -sigma_t * score
      eps_ = value * (-sg);
      check(a_ > 0, "score prediction is undefined at a(s) = 0 (flow t = 1)");
      x0_ = (x_ - eps_ * s) / a_;
      break;
    case PredKind::EDM:
      check(proc.space() == Space::Plain, "EDM preconditioning needs a VP/VE/EDM process, not ", proc.name());
      x0_ = x_ * p.c_skip(s) + value * p.c_out(s);
      break;
  }
  if (!eps_.defined()) eps_ = s > 0 ? (x_ - x0_ * a_) / s : torch::zeros_like(x0_);
}

torch::Tensor Prediction::v() const {
  const double al = a_ * scale_, sg = s_ * scale_;
  return eps_ * al - x0_ * sg;
}
torch::Tensor Prediction::velocity() const { return eps_ - x0_; }
torch::Tensor Prediction::score() const { return eps_ / (-s_ * scale_); }

torch::Tensor Prediction::as(const Parameterization& p) const {
  switch (p.kind) {
    case PredKind::X0: return x0_;
    case PredKind::Eps: return eps_;
    case PredKind::V: return v();
    case PredKind::Velocity: return velocity();
    case PredKind::Score: return score();
    case PredKind::EDM: return (x0_ - x_ * p.c_skip(s_)) / p.c_out(s_);
  }
  return {};
}

torch::Tensor Prediction::target(const Parameterization& p, const torch::Tensor& x0, const torch::Tensor& eps, double s,
                                 const Process& proc) {
  return Prediction({PredKind::X0}, x0, proc.add_noise(x0, eps, s), s, proc).as(p);
}

}  // namespace tweedie
