// Guidance-scale schedules (Wang et al. 2024, "Analysis of Classifier-Free
// Guidance Weight Schedulers", the heuristic linear and cosine schedulers):
//   w(s) = 1 + (w - 1) f(tau(s)),  f = 1 | 2 (1 - tau) | 1 + cos(pi tau),
// tau = normalized model time (cfg_schedule.h). Verified in
// tests/test_guidance.cpp: tau against its definition on several processes,
// f against the closed forms (mean 1 over tau, 0 at pure noise, 2 at the clean
// end), the constant schedule is plain CFG bit for bit, and the guided x0 on
// the Gaussian mixture uses w(s) at every level.
#include "tweedie/guide/cfg_schedule.h"

#include <algorithm>
#include <cmath>

#include "tweedie/core/error.h"

namespace tweedie {

CFGSchedule cfg_schedule_from_string(const std::string& name) {
  if (name == "constant") return CFGSchedule::Constant;
  if (name == "linear") return CFGSchedule::Linear;
  if (name == "cosine") return CFGSchedule::Cosine;
  fail("unknown cfg schedule '", name, "' (constant, linear, cosine)");
}

std::string to_string(CFGSchedule k) {
  switch (k) {
    case CFGSchedule::Constant: return "constant";
    case CFGSchedule::Linear: return "linear";
    case CFGSchedule::Cosine: return "cosine";
  }
  return "?";
}

std::vector<std::string> cfg_schedule_names() { return {"constant", "linear", "cosine"}; }

double normalized_time(const Process& p, double s) {
  const double t0 = p.t_of(p.s_min()), t1 = p.t_of(p.s_max());
  if (s <= p.s_min()) return 0.0;
  if (s >= p.s_max()) return 1.0;
  return std::clamp((p.t_of(s) - t0) / (t1 - t0), 0.0, 1.0);
}

double cfg_schedule_factor(CFGSchedule k, double tau) {
  switch (k) {
    case CFGSchedule::Constant: return 1.0;
    case CFGSchedule::Linear: return 2.0 * (1.0 - tau);
    case CFGSchedule::Cosine: return 1.0 + std::cos(M_PI * tau);
  }
  return 1.0;
}

double scheduled_cfg_scale(CFGSchedule k, double w, const Process& p, double s) {
  if (k == CFGSchedule::Constant) return w;
  return 1.0 + (w - 1.0) * cfg_schedule_factor(k, normalized_time(p, s));
}

}  // namespace tweedie
