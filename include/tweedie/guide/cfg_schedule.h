// Guidance-scale schedules (Wang et al. 2024, "Analysis of Classifier-Free
// Guidance Weight Schedulers"): the CFG scale varies over the sampling run;
// monotonically increasing schedules (weak guidance at high noise, strong at
// low noise) improve on a constant scale at the same average strength.
//
// The variable: normalized model time
//   tau(s) = (t(s) - t(s_min)) / (t(s_max) - t(s_min))  clamped to [0, 1],
// with t = Process::t_of (the model's own time) and s_min, s_max the
// process's trained range; tau = 1 is pure noise, tau = 0 the clean end. This
// is the paper's t/T for discrete VP tables (t = the timestep index), flow
// time t for flow models, t for continuous VP and normalized log sigma for
// EDM (its model time is log(sigma)/4). (For VE, whose model time is sigma
// itself, tau is linear in sigma.) Levels outside the trained range clamp.
//
// The schedule scales the guidance strength w - 1 (Ho & Salimans' w), so w = 1
// stays the conditional model at every level:
//   w(s) = 1 + (w - 1) f(tau(s)),
//   constant  f = 1
//   linear    f = 2 (1 - tau)
//   cosine    f = 1 + cos(pi tau)
// Both non-constant shapes rise from 0 at pure noise to 2 at the clean end and
// average 1 over tau in [0, 1], so they match the constant schedule's mean
// strength (the paper's normalization).
#pragma once
#include <string>
#include <vector>

#include "tweedie/process/process.h"

namespace tweedie {

enum class CFGSchedule { Constant, Linear, Cosine };
// "constant", "linear", "cosine"; Error naming the value otherwise.
CFGSchedule cfg_schedule_from_string(const std::string& name);
std::string to_string(CFGSchedule k);
std::vector<std::string> cfg_schedule_names();

// tau(s) above: 1 at the process's s_max (and above), 0 at s_min (and below).
double normalized_time(const Process& p, double s);
// f(tau) above.
double cfg_schedule_factor(CFGSchedule k, double tau);
// w(s) = 1 + (w - 1) f(tau(s)).
double scheduled_cfg_scale(CFGSchedule k, double w, const Process& p, double s);

}  // namespace tweedie
