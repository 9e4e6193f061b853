// Schedule registry, validation and shared helpers (see schedule.h).
#include "tweedie/process/schedule.h"

#include <algorithm>
#include <cmath>

#include "tweedie/core/error.h"

namespace tweedie {

template <>
Registry<ScheduleInfo>& registry<ScheduleInfo>() {
  static Registry<ScheduleInfo> r("schedule");
  return r;
}

std::vector<double> make_schedule(const std::string& name, const Process& p, int steps, const ScheduleOptions& o) {
  const ScheduleInfo& info = find_schedule(name);
  check(steps >= 1, "steps must be >= 1 (got ", steps, ")");
  check(steps <= 100000, "steps must be <= 100000 (got ", steps, ")");
  check(o.shift > 0 && std::isfinite(o.shift), "shift must be positive (got ", o.shift, ")");
  check(o.rho >= 0 && std::isfinite(o.rho), "rho must be positive (got ", o.rho, ")");
  check(o.s_min >= 0 && o.s_max >= 0, "sigma-min and sigma-max must be >= 0");
  ScheduleOptions with = o;
  with.values = o.own.values_for(info.options, "schedule '" + info.name + "'");
  std::vector<double> s = info.fn(p, steps, with);
  check((int)s.size() == steps + 1, "schedule '", name, "' produced ", s.size(), " levels for ", steps, " steps");
  check(s.back() == 0, "schedule '", name, "' must end at 0");
  for (int i = 0; i < steps; ++i)
    check(std::isfinite(s[i]) && s[i] > s[i + 1], "schedule '", name, "' is not strictly decreasing at ", i, " (",
          s[i], " -> ", s[i + 1], "); try fewer steps");
  check(s[0] <= p.s_limit(), "schedule '", name, "' starts at ", s[0], ", beyond the process limit ", p.s_limit());
  return s;
}

namespace schedule_util {

double smin(const Process& p, const ScheduleOptions& o) { return o.s_min > 0 ? o.s_min : p.s_min(); }
double smax(const Process& p, const ScheduleOptions& o) { return o.s_max > 0 ? o.s_max : p.s_max(); }
double smax_sigma(const Process& p, const ScheduleOptions& o) {
  return o.s_max > 0 ? o.s_max : std::min(p.s_max(), kEdmSigmaMax);
}

std::vector<double> finish(const Process& p, std::vector<double> s, const ScheduleOptions& o) {
  if (o.shift != 1.0)
    for (double& v : s) v = p.shift_lambda(v, -std::log(o.shift));
  s.push_back(0.0);
  return s;
}

std::vector<double> loglinear_interp(const std::vector<double>& table, int steps) {
  const int n = table.size();
  std::vector<double> out(steps + 1);
  for (int i = 0; i <= steps; ++i) {
    double x = steps == 0 ? 0 : double(i) * (n - 1) / steps;
    int lo = std::min(int(x), n - 2);
    double w = x - lo;
    out[i] = std::exp((1 - w) * std::log(table[lo]) + w * std::log(table[lo + 1]));
  }
  return out;
}

}  // namespace schedule_util
}  // namespace tweedie
