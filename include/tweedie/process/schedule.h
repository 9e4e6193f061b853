// Step schedules: the decreasing list of noise levels a sampler visits.
//
// A schedule returns steps + 1 levels s_0 > s_1 > ... > s_steps = 0 in the
// sampling space of the process (process.h); the last step of every sampler
// goes to s = 0, where the state is the data. Schedules defined on model time
// (linspace / leading / trailing for discrete tables, flow shift) are mapped
// to noise levels through the process.
#pragma once
#include <string>
#include <vector>

#include "tweedie/core/method_options.h"
#include "tweedie/core/registry.h"
#include "tweedie/process/process.h"

namespace tweedie {

struct ScheduleOptions {
  double s_min = 0;      // 0: the process's s_min()
  double s_max = 0;      // 0: the process's s_max()
  double rho = 0;        // 0: the schedule's default (karras 7, polyexponential 1)
  double rho_or(double dflt) const { return rho > 0 ? rho : dflt; }
  double shift = 1.0;    // timestep shift (SD3/Flux flow shift, or any process): lambda -> lambda - log(shift)
  int steps_offset = 1;  // diffusers "leading" spacing offset
  // The schedule's own options by name (beta's "beta-a" and "beta-b", GITS's
  // "gits-coeff"): declared in its registration (ScheduleInfo::option),
  // checked by make_schedule, which hands their values on in `values`.
  OptionValues own;
  MethodValues values;  // set by make_schedule for the schedule it runs
};

using ScheduleFn = std::vector<double> (*)(const Process& p, int steps, const ScheduleOptions& o);

struct ScheduleInfo {
  std::string name;
  std::string description;
  std::string reference;
  ScheduleFn fn;
  std::vector<MethodOption> options = {};  // its own options (ScheduleOptions::own)
  ScheduleInfo& option(MethodOption o) { options.push_back(std::move(o)); return *this; }
};

template <>
Registry<ScheduleInfo>& registry<ScheduleInfo>();
using ScheduleRegistrar = Registrar<ScheduleInfo>;
inline const std::vector<ScheduleInfo>& schedules() { return registry<ScheduleInfo>().all(); }
// Throws Error listing the known names.
inline const ScheduleInfo& find_schedule(const std::string& name) { return registry<ScheduleInfo>().find(name); }
// Build a schedule and validate it (steps >= 1, finite, strictly decreasing, ends at 0).
std::vector<double> make_schedule(const std::string& name, const Process& p, int steps, const ScheduleOptions& o = {});

// Shared helpers for schedule files.
namespace schedule_util {
double smin(const Process& p, const ScheduleOptions& o);
double smax(const Process& p, const ScheduleOptions& o);
// EDM's sigma_max (Karras et al. 2022, sec. 5 and Table 1), for data scaled to [-1, 1].
constexpr double kEdmSigmaMax = 80.0;
// Top level of the sigma-space schedules (karras, exponential, kl-optimal,
// bong-tangent): o.s_max if given, else the process's s_max capped at
// kEdmSigmaMax. At sigma = 80 a [-1, 1] image is below 1e-4 of the state's
// variance, so starting higher only spends steps where nothing happens: the
// cosine VP table reaches 20291, and from there Karras' rho = 7 spacing left
// a last jump of 10.3 -> 0.0064 at 5 steps, which a second-order step in
// sigma amplifies (Heun on the default model at 19 NFE: FID 127 and 17 %
// class accuracy from 20291, 25 and 99.5 % from 80; 200 samples, CFG 3).
double smax_sigma(const Process& p, const ScheduleOptions& o);
// Append the terminal 0 and apply o.shift (a log-SNR shift, delta = -log(shift)).
std::vector<double> finish(const Process& p, std::vector<double> s, const ScheduleOptions& o);
// Log-linear interpolation of a decreasing table of noise levels to steps+1 points
// (Align-Your-Steps rule for other step counts).
std::vector<double> loglinear_interp(const std::vector<double>& table, int steps);
}  // namespace schedule_util

}  // namespace tweedie
