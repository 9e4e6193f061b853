// Schedules that pick training timesteps (diffusers timestep_spacing and
// ComfyUI's table schedulers); the noise level of timestep i is
// Process::s_at_timestep(i). N = process.timesteps().
//   linspace:    round(linspace(0, N-1, n)) reversed
//   leading:     (arange(n) * (N // n)) + steps_offset, reversed (SD's DDIM/PNDM default)
//   trailing:    round(arange(N, 0, -N/n)) - 1 (Lin et al. 2024 recommend it)
//   simple:      every (N/n)-th table level from the top (ComfyUI "simple")
//   sgm-uniform: model time uniform from t(s_max) to t(s_min), n+1 points, last dropped (ComfyUI "sgm_uniform")
//   discrete:    model time uniform from t(s_max) to t(s_min), n points (ComfyUI "normal", sd.cpp "discrete")
// Each is followed by 0.
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/process/schedule.h"

namespace tweedie {
namespace {

using schedule_util::finish;

std::vector<double> from_timesteps(const Process& p, const std::vector<double>& ts, const ScheduleOptions& o) {
  std::vector<double> s;
  for (double t : ts) s.push_back(p.s_at_timestep(t));
  return finish(p, s, o);
}

std::vector<double> linspace(const Process& p, int n, const ScheduleOptions& o) {
  const int N = p.timesteps();
  std::vector<double> ts;
  for (int i = n - 1; i >= 0; --i) ts.push_back(std::round(n == 1 ? N - 1 : double(i) * (N - 1) / (n - 1)));
  return from_timesteps(p, ts, o);
}

std::vector<double> leading(const Process& p, int n, const ScheduleOptions& o) {
  const int N = p.timesteps();
  check(n <= N, "leading spacing: steps (", n, ") exceed the ", N, " training timesteps");
  const int ratio = N / n;
  std::vector<double> ts;
  for (int i = n - 1; i >= 0; --i) ts.push_back(std::min(N - 1, i * ratio + o.steps_offset));
  return from_timesteps(p, ts, o);
}

std::vector<double> trailing(const Process& p, int n, const ScheduleOptions& o) {
  const int N = p.timesteps();
  std::vector<double> ts;
  for (int i = 0; i < n; ++i) ts.push_back(std::max(0.0, std::round(N - double(i) * N / n) - 1));
  return from_timesteps(p, ts, o);
}

std::vector<double> simple(const Process& p, int n, const ScheduleOptions& o) {
  const int N = p.timesteps();
  const double ss = double(N) / n;
  std::vector<double> ts;
  for (int i = 0; i < n; ++i) ts.push_back(N - 1 - int(i * ss));
  return from_timesteps(p, ts, o);
}

std::vector<double> uniform_time(const Process& p, int n, bool sgm, const ScheduleOptions& o) {
  const double t0 = p.t_of(schedule_util::smax(p, o)), t1 = p.t_of(schedule_util::smin(p, o));
  const int pts = sgm ? n + 1 : n;
  std::vector<double> s;
  for (int i = 0; i < n; ++i) s.push_back(p.s_of(pts == 1 ? t0 : t0 + (t1 - t0) * i / (pts - 1)));
  return finish(p, s, o);
}
std::vector<double> sgm_uniform(const Process& p, int n, const ScheduleOptions& o) { return uniform_time(p, n, true, o); }
std::vector<double> discrete(const Process& p, int n, const ScheduleOptions& o) { return uniform_time(p, n, false, o); }

ScheduleRegistrar r1({"linspace", "training timesteps evenly spaced, endpoints included (diffusers 'linspace')",
                      "diffusers timestep_spacing", linspace});
ScheduleRegistrar r2({"leading", "timesteps i*(N/n) + offset (SD's original DDIM/PNDM spacing)",
                      "diffusers timestep_spacing; Lin et al. 2024 Table 2", leading});
ScheduleRegistrar r3({"trailing", "timesteps from the last one down, N/n apart (starts at full noise)",
                      "Lin et al. 2024, 'Common Diffusion Noise Schedules...'", trailing});
ScheduleRegistrar r4({"simple", "every N/n-th table level from the top", "ComfyUI simple_scheduler", simple});
ScheduleRegistrar r5({"sgm-uniform", "model time uniform over n+1 points, last dropped", "ComfyUI sgm_uniform",
                      sgm_uniform});
ScheduleRegistrar r6({"discrete", "model time uniform from t(sigma_max) to t(sigma_min)",
                      "ComfyUI 'normal'; stable-diffusion.cpp 'discrete'", discrete});

}  // namespace
}  // namespace tweedie
