#include "sampling_args.h"

#include "method_flags.h"
#include "tweedie/core/error.h"
#include "tweedie/sample/generate.h"

namespace tweedie::cli {

namespace {

DeclaredOptions sampler_declared() {
  DeclaredOptions out;
  for (const SamplerInfo& s : samplers())
    if (!s.options.empty()) out.push_back({s.name, &s.options});
  return out;
}

DeclaredOptions schedule_declared() {
  DeclaredOptions out;
  for (const ScheduleInfo& s : schedules())
    if (!s.options.empty()) out.push_back({s.name, &s.options});
  return out;
}

}  // namespace

std::vector<Args::Opt> sampling_opts(const std::string& ds, const std::string& dsch, int dsteps) {
  std::vector<Args::Opt> out = {
      {"sampler", "", false, "sampler (see 'tweedie samplers')", ds},
      {"schedule", "", false, "step schedule (see 'tweedie samplers')", dsch},
      {"steps", "s", false, "number of steps", std::to_string(dsteps)},
      {"nfe", "", false, "evaluation budget instead of --steps: the most steps this sampler fits in N model evaluations", ""},
      {"eta", "", false, "noise amount of DDIM/ancestral/SDE samplers (default: the sampler's)", ""},
      {"s-noise", "", false, "scale of fresh noise", "1"},
      {"churn", "", false, "EDM S_churn for euler, heun and dpm2", "0"},
      {"s-tmin", "", false, "churn only for sigma >= this", "0"},
      {"s-tmax", "", false, "churn only for sigma <= this", "inf"},
      {"rho", "", false, "karras/polyexponential rho (default: the schedule's)", ""},
      {"shift", "", false, "timestep shift (SD3/Flux flow shift; log-SNR shift by -log(shift))", "1"},
      {"sigma-min", "", false, "lowest nonzero noise level (default: the process's)", ""},
      {"sigma-max", "", false, "highest noise level (default: the process's; karras, exponential, kl-optimal and bong-tangent cap it at 80)", ""},
  };
  // the samplers' and schedules' own options (method_flags.h)
  for (const auto& decl : {sampler_declared(), schedule_declared()})
    for (auto& f : declared_option_flags(decl)) out.push_back(f);
  return out;
}

int sampling_steps(const Args& a, const SamplerInfo& s) {
  check(!(a.has("nfe") && a.has("steps")), "give either --steps or --nfe, not both");
  if (a.has("nfe")) return steps_for_nfe(s, a.integer("nfe"));
  const int steps = a.integer("steps");
  check(steps >= 1, "--steps must be >= 1 (got ", steps, ")");
  return steps;
}

SamplerOptions sampler_options(const Args& a) {
  SamplerOptions o;
  if (a.has("eta")) {
    o.eta = a.number("eta");
    check(o.eta >= 0, "--eta must be >= 0 (got ", o.eta, ")");
  }
  o.s_noise = a.number("s-noise");
  o.s_churn = a.number("churn");
  o.s_tmin = a.number("s-tmin");
  o.s_tmax = a.str("s-tmax") == "inf" ? INFINITY : a.number("s-tmax");
  check(o.s_noise >= 0, "--s-noise must be >= 0");
  check(o.s_churn >= 0, "--churn must be >= 0");
  const SamplerInfo& s = find_sampler(a.str("sampler"));
  o.own = given_option_values(a, sampler_declared(), s.name, "");
  o.own.values_for(s.options, "--sampler " + s.name);  // in range
  return o;
}

ScheduleOptions schedule_options(const Args& a) {
  ScheduleOptions o;
  if (a.has("rho")) o.rho = a.number("rho");
  o.shift = a.number("shift");
  if (a.has("sigma-min")) o.s_min = a.number("sigma-min");
  if (a.has("sigma-max")) o.s_max = a.number("sigma-max");
  const ScheduleInfo& s = find_schedule(a.str("schedule"));
  o.own = given_option_values(a, schedule_declared(), s.name, "");
  o.own.values_for(s.options, "--schedule " + s.name);  // in range
  check(!a.has("rho") || o.rho > 0, "--rho must be positive");
  check(!a.has("sigma-min") || o.s_min > 0, "--sigma-min must be positive");
  check(!a.has("sigma-max") || o.s_max > 0, "--sigma-max must be positive");
  check(o.s_min == 0 || o.s_max == 0 || o.s_min < o.s_max, "--sigma-min must be below --sigma-max");
  return o;
}

const SamplerInfo& set_sd_sampling(const Args& a, SdRequest& req) {
  const SamplerInfo& sampler = find_sampler(a.str("sampler"));
  req.sampler = sampler.name;
  req.schedule = a.str("schedule");
  req.steps = sampling_steps(a, sampler);
  req.sampler_options = sampler_options(a);
  req.schedule_options = schedule_options(a);
  return sampler;
}

}  // namespace tweedie::cli
