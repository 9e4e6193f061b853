// Karras schedule (Karras et al. 2022, "Elucidating the Design Space of
// Diffusion-Based Generative Models", eq. 5):
//   s_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho, rho = 7,
// followed by 0; s_max defaults to the process's capped at 80 (schedule.h,
// smax_sigma). Verified by the closed form in tests/test_schedules.cpp.
#include <cmath>

#include "tweedie/process/schedule.h"

namespace tweedie {
namespace {

std::vector<double> karras(const Process& p, int n, const ScheduleOptions& o) {
  const double rho = o.rho_or(7.0);
  double lo = std::pow(schedule_util::smin(p, o), 1 / rho), hi = std::pow(schedule_util::smax_sigma(p, o), 1 / rho);
  std::vector<double> s(n);
  for (int i = 0; i < n; ++i) s[i] = std::pow(hi + (n == 1 ? 0.0 : double(i) / (n - 1)) * (lo - hi), rho);
  return schedule_util::finish(p, s, o);
}

ScheduleRegistrar reg({"karras", "Karras et al. rho-spaced sigmas (rho = --rho, default 7)",
                       "Karras et al. 2022, EDM, eq. 5", karras});

}  // namespace
}  // namespace tweedie
