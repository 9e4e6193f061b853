// Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023):
// x_t = (1 - t) x0 + t eps, model time t, the network predicts the velocity
// eps - x0. Noise level s = t, the sampling space is the flow state itself.
// SD3/Flux timestep shift is a schedule transform (ScheduleOptions::shift).
#include "tweedie/core/error.h"
#include "tweedie/process/process.h"

namespace tweedie {
namespace {

class Flow : public Process {
 public:
  explicit Flow(double tmin) : tmin_(tmin) { check(tmin > 0 && tmin < 1, "flow: t_min must be in (0, 1)"); }
  std::string name() const override { return "flow"; }
  Space space() const override { return Space::Flow; }
  double s_min() const override { return tmin_; }
  double s_max() const override { return 1.0; }
  double t_of(double s) const override { return s; }
  double s_of(double t) const override { return t; }
  double model_scale(double) const override { return 1.0; }

 private:
  double tmin_;
};

}  // namespace

ProcessPtr make_flow(double t_min) { return std::make_shared<Flow>(t_min); }

}  // namespace tweedie
