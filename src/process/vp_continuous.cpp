// Continuous variance-preserving process (Song et al. 2021, score SDE):
// linear beta(t) = beta_min + t (beta_max - beta_min), so
//   log abar(t) = -(beta_min t + (beta_max - beta_min) t^2 / 2),
// or the continuous cosine schedule abar(t) = cos^2(pi/2 (t+0.008)/1.008) /
// cos^2(pi/2 0.008/1.008). Noise level s = sqrt((1 - abar)/abar); model time
// t in [t_eps, 1] (cosine: [t_eps, 0.9946], as DPM-Solver's NoiseScheduleVP,
// since abar(1) = 0 puts s at infinity).
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/process/process.h"

namespace tweedie {
namespace {

class VPContinuous : public Process {
 public:
  VPContinuous(VPContinuousKind k, double bmin, double bmax, double teps)
      : kind_(k), bmin_(bmin), bmax_(bmax), teps_(teps) {
    check(bmax > bmin && bmin > 0, "vp-cont: need 0 < beta_min < beta_max");
    check(teps > 0 && teps < 1, "vp-cont: t_eps must be in (0, 1)");
  }
  std::string name() const override { return kind_ == VPContinuousKind::Linear ? "vp-cont" : "vp-cont:cosine"; }
  Space space() const override { return Space::Plain; }
  double s_min() const override { return s_of(teps_); }
  double s_max() const override { return s_of(kind_ == VPContinuousKind::Linear ? 1.0 : 0.9946); }
  // -log abar(t)
  double nlab(double t) const {
    if (kind_ == VPContinuousKind::Linear) return bmin_ * t + 0.5 * (bmax_ - bmin_) * t * t;
    const double c = 0.008;
    double f = std::cos(M_PI / 2 * (t + c) / (1 + c)), f0 = std::cos(M_PI / 2 * c / (1 + c));
    return -2 * std::log(f / f0);
  }
  double s_of(double t) const override { return std::sqrt(std::expm1(nlab(t))); }
  double t_of(double s) const override {
    double target = std::log1p(s * s);  // -log abar
    if (kind_ == VPContinuousKind::Linear) {
      // solve (bmax-bmin)/2 t^2 + bmin t - target = 0
      double A = 0.5 * (bmax_ - bmin_);
      return (-bmin_ + std::sqrt(bmin_ * bmin_ + 4 * A * target)) / (2 * A);
    }
    const double c = 0.008;
    double f0 = std::cos(M_PI / 2 * c / (1 + c));
    double f = f0 * std::exp(-0.5 * target);
    return std::acos(std::clamp(f, -1.0, 1.0)) * 2 / M_PI * (1 + c) - c;
  }
  double model_scale(double s) const override { return 1.0 / std::sqrt(1.0 + s * s); }

 private:
  VPContinuousKind kind_;
  double bmin_, bmax_, teps_;
};

}  // namespace

ProcessPtr make_vp_continuous(VPContinuousKind kind, double beta_min, double beta_max, double t_eps) {
  return std::make_shared<VPContinuous>(kind, beta_min, beta_max, t_eps);
}

}  // namespace tweedie
