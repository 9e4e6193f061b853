// Variance-exploding processes: x = x0 + sigma eps.
// VE (Song & Ermon; score SDE "NCSN"): model time = sigma.
// EDM (Karras et al. 2022, "Elucidating the Design Space..."): model time
// c_noise = log(sigma) / 4; the network's preconditioning (c_in, c_skip,
// c_out) is the EDM parameterization in prediction.h.
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/process/process.h"

namespace tweedie {
namespace {

class VE : public Process {
 public:
  VE(bool edm, double smin, double smax) : edm_(edm), smin_(smin), smax_(smax) {
    check(smin > 0 && smax > smin, edm ? "edm" : "ve", ": need 0 < s_min < s_max");
  }
  std::string name() const override { return edm_ ? "edm" : "ve"; }
  Space space() const override { return Space::Plain; }
  double s_min() const override { return smin_; }
  double s_max() const override { return smax_; }
  double t_of(double s) const override { return edm_ ? 0.25 * std::log(s) : s; }
  double s_of(double t) const override { return edm_ ? std::exp(4 * t) : t; }
  double model_scale(double) const override { return 1.0; }

 private:
  bool edm_;
  double smin_, smax_;
};

}  // namespace

ProcessPtr make_ve(double s_min, double s_max) { return std::make_shared<VE>(false, s_min, s_max); }
ProcessPtr make_edm(double s_min, double s_max) { return std::make_shared<VE>(true, s_min, s_max); }

}  // namespace tweedie
