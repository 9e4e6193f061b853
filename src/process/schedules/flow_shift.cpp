// flow-shift: the flow-matching default schedule, uniform in rectified-flow
// time (Flux pipelines: sigmas = linspace(1, 1/n, n); Esser et al. 2024,
// "Scaling Rectified Flow Transformers" (SD3), whose diffusers default
// FlowMatchEulerDiscreteScheduler uses linspace(1, 1/1000, n) instead, which
// is "discrete" here), followed by 0, with the timestep shift
// t -> shift t / (1 + (shift - 1) t) applied by --shift (schedule_util::finish:
// a log-SNR shift by -log(shift), the same map).
//
// For any process the flow time of a level is the rectified-flow time with the
// same log-SNR, t = sigma / (1 + sigma) with sigma = exp(-lambda(s)) (t = s on
// flow). Then t_i = t(s_max) (1 - i/n), i = 0..n-1, mapped back through
// lambda; on flow with s_max = 1 this is Flux's list exactly.
// Verified: tests/test_schedules.cpp (uniform in t on flow, shift = 3 gives
// 3t/(1+2t), every process).
#include <cmath>

#include "tweedie/process/schedule.h"

namespace tweedie {
namespace {

std::vector<double> flow_shift(const Process& p, int n, const ScheduleOptions& o) {
  const double t_max = 1.0 / (1.0 + std::exp(p.lambda(schedule_util::smax(p, o))));
  std::vector<double> s(n);
  for (int i = 0; i < n; ++i) {
    const double t = t_max * (1.0 - double(i) / n);
    s[i] = p.space() == Space::Flow ? t : p.s_of_lambda(std::log1p(-t) - std::log(t));
  }
  return schedule_util::finish(p, s, o);
}

ScheduleRegistrar reg({"flow-shift", "uniform in rectified-flow time from t(sigma_max) to t_max/n (Flux); use --shift",
                       "Esser et al. 2024 (SD3) / Flux flow-matching schedule", flow_shift});

}  // namespace
}  // namespace tweedie
