// KL-optimal schedule (Sabour, Fidler & Kreis 2024, "Align Your Steps",
// appendix: the schedule minimizing the KL bound when the data are a single
// point; ComfyUI kl_optimal_scheduler, stable-diffusion.cpp KLOptimalScheduler):
//   sigma_i = tan((1 - r_i) atan(sigma_max) + r_i atan(sigma_min)),  r_i = i/(n-1),
// followed by 0 (one step: sigma_max, 0).
//
// The derivation is for the variance-exploding ODE, so sigma is the VE noise
// level exp(-lambda) of the process: it equals s for VP, VE and EDM (the
// schedule is then ComfyUI's exactly), and is t/(1-t) for flow, where
// sigma_max = inf at t = 1 gives atan = pi/2 (ComfyUI applies the formula to
// t itself there). Verified: tests/test_schedules.cpp (closed form).
#include <cmath>

#include "tweedie/process/schedule.h"

namespace tweedie {
namespace {

std::vector<double> kl_optimal(const Process& p, int n, const ScheduleOptions& o) {
  const double hi = std::atan(std::exp(-p.lambda(schedule_util::smax_sigma(p, o))));
  const double lo = std::atan(std::exp(-p.lambda(schedule_util::smin(p, o))));
  std::vector<double> s(n);
  for (int i = 0; i < n; ++i) {
    const double r = n == 1 ? 0.0 : double(i) / (n - 1);
    const double sigma = std::tan((1 - r) * hi + r * lo);
    s[i] = std::min(p.s_of_lambda(-std::log(sigma)), p.s_limit());
  }
  // tan(pi/2) is finite in floating point: pin the flow start at exactly t = 1.
  if (p.space() == Space::Flow && schedule_util::smax_sigma(p, o) >= 1.0) s[0] = 1.0;
  return schedule_util::finish(p, s, o);
}

ScheduleRegistrar reg({"kl-optimal", "sigma = tan of atan(sigma) linear from sigma_max to sigma_min",
                       "Sabour et al. 2024, 'Align Your Steps', appendix (ComfyUI kl_optimal)", kl_optimal});

}  // namespace
}  // namespace tweedie
