// Align Your Steps (Sabour, Fidler & Kreis 2024, "Align Your Steps: Optimizing
// Sampling Schedules in Diffusion Models"; published 10-step levels from
// research.nvidia.com/labs/toronto-ai/AlignYourSteps, as in ComfyUI
// comfy_extras/nodes_align_your_steps.py and stable-diffusion.cpp).
//
// AYS optimizes the step locations by minimizing a KL upper bound between the
// discretized and the true reverse SDE, for a given model. The published
// 10-step tables (11 levels) are those of Stable Diffusion 1.5 ("ays") and
// SDXL ("ays-sdxl"). Other step counts interpolate the table log-linearly
// (level i at position i * 10 / steps, linear in log sigma); the last level is
// then set to 0.
//
// Other processes: the tables are levels of SD's 1000-step scaled_linear table
// ("vp"). A level sigma is mapped by its fraction of SD model time,
// f = t_SD(sigma) / 999, to Process::s_at_timestep(f * (N-1)): the same
// fraction of the process's training timesteps (uniform model time for the
// continuous processes). On "vp" the mapping is the identity, so the schedule
// is the published one; the top level maps to the process's s_max and the
// bottom to its s_min (the latter replaced by 0). --sigma-min/--sigma-max do
// not apply; --shift does.
// Verified: tests/test_schedules.cpp (10 steps on vp equal the published table).
#include <cmath>

#include "tweedie/process/schedule.h"

namespace tweedie {
namespace {

const std::vector<double> kSD15 = {14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520,
                                   1.8841921177,  1.3943805092, 0.9642583904, 0.6523686016,
                                   0.3977456272,  0.1515232662, 0.0291671582};
const std::vector<double> kSDXL = {14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769,
                                   1.3405244945,  0.8620721141, 0.5550693289, 0.3798540708,
                                   0.2332364134,  0.1114188177, 0.0291671582};

std::vector<double> from_table(const Process& p, const std::vector<double>& table, int n, const ScheduleOptions& o) {
  static ProcessPtr sd = make_vp_discrete({});
  auto lv = n + 1 == (int)table.size() ? table : schedule_util::loglinear_interp(table, n);
  std::vector<double> s;
  for (int i = 0; i < n; ++i) {
    const double f = sd->t_of(lv[i]) / (sd->timesteps() - 1);  // fraction of SD1.5 model time
    s.push_back(p.s_at_timestep(f * (p.timesteps() - 1)));
  }
  return schedule_util::finish(p, s, o);
}

std::vector<double> ays(const Process& p, int n, const ScheduleOptions& o) { return from_table(p, kSD15, n, o); }
std::vector<double> ays_sdxl(const Process& p, int n, const ScheduleOptions& o) { return from_table(p, kSDXL, n, o); }

ScheduleRegistrar reg1({"ays", "Align Your Steps, the published SD1.5 levels (log-linear for other step counts)",
                        "Sabour et al. 2024, 'Align Your Steps'", ays});
ScheduleRegistrar reg2({"ays-sdxl", "Align Your Steps, the published SDXL levels (log-linear for other step counts)",
                        "Sabour et al. 2024, 'Align Your Steps'", ays_sdxl});

}  // namespace
}  // namespace tweedie
