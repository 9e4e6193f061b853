// Exponential (log-uniform sigma) and polyexponential schedules (k-diffusion
// get_sigmas_exponential / get_sigmas_polyexponential):
//   exponential:     log s_i linear from log s_max to log s_min
//   polyexponential: log s = log s_min + (log s_max - log s_min) * (1 - i/(n-1))^rho, rho = 1 gives exponential
#include <cmath>

#include "tweedie/process/schedule.h"

namespace tweedie {
namespace {

std::vector<double> polyexp(const Process& p, int n, double rho, const ScheduleOptions& o) {
  double lo = std::log(schedule_util::smin(p, o)), hi = std::log(schedule_util::smax_sigma(p, o));
  std::vector<double> s(n);
  for (int i = 0; i < n; ++i) {
    double r = n == 1 ? 1.0 : 1.0 - double(i) / (n - 1);
    s[i] = std::exp(lo + (hi - lo) * std::pow(r, rho));
  }
  return schedule_util::finish(p, s, o);
}

std::vector<double> exponential(const Process& p, int n, const ScheduleOptions& o) { return polyexp(p, n, 1.0, o); }
std::vector<double> polyexponential(const Process& p, int n, const ScheduleOptions& o) {
  return polyexp(p, n, o.rho_or(1.0), o);
}

ScheduleRegistrar reg1({"exponential", "sigmas uniform in log sigma", "k-diffusion get_sigmas_exponential",
                        exponential});
ScheduleRegistrar reg2({"polyexponential", "log sigma follows (1 - i/(n-1))^rho (--rho, default 1 here)",
                        "k-diffusion get_sigmas_polyexponential", polyexponential});

}  // namespace
}  // namespace tweedie
