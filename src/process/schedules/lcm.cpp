// LCM schedule (Luo et al. 2023, "Latent Consistency Models"; diffusers
// LCMScheduler.set_timesteps, stable-diffusion.cpp LCMScheduler): LCM was
// distilled on a 50-step skipping schedule, the "origin" timesteps
// 20 j - 1, j = 1..50 (N/50 apart for N training timesteps). n steps take
// every (50/n)-th of them from the top:
//   t_i = (50 - floor(50 i / n)) (N/50) - 1,  i = 0..n-1,
// e.g. 999, 759, 499, 259 for 4 steps; followed by 0. At most 50 steps.
// The level of timestep t is Process::s_at_timestep(t).
// Verified: tests/test_schedules.cpp (the 4-step timesteps, every process).
#include "tweedie/core/error.h"
#include "tweedie/process/schedule.h"

namespace tweedie {
namespace {

std::vector<double> lcm(const Process& p, int n, const ScheduleOptions& o) {
  constexpr int kOrigin = 50;
  const int N = p.timesteps(), k = N / kOrigin;
  check(n <= kOrigin, "lcm schedule: at most ", kOrigin, " steps (the LCM origin schedule), got ", n);
  check(k >= 1, "lcm schedule: the process has only ", N, " training timesteps");
  std::vector<double> s;
  for (int i = 0; i < n; ++i) s.push_back(p.s_at_timestep((kOrigin - (i * kOrigin) / n) * k - 1));
  return schedule_util::finish(p, s, o);
}

ScheduleRegistrar reg({"lcm", "LCM's 50-step origin timesteps, every (50/n)-th (at most 50 steps)",
                       "Luo et al. 2023, 'Latent Consistency Models' (diffusers LCMScheduler)", lcm});

}  // namespace
}  // namespace tweedie
