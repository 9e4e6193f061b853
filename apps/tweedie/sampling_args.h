// Sampler and schedule options shared by the subcommands that sample.
#pragma once
#include <vector>

#include "cli.h"
#include "tweedie/pipelines/stable_diffusion.h"
#include "tweedie/process/schedule.h"
#include "tweedie/sample/sampler.h"

namespace tweedie::cli {

// --sampler, --schedule, --steps, --nfe, --eta, --s-noise, --churn, --s-tmin, --s-tmax,
// --gamma, --ge-gamma, --rho, --shift, --sigma-min, --sigma-max, --gits-coeff,
// --beta-a, --beta-b
std::vector<Args::Opt> sampling_opts(const std::string& default_sampler, const std::string& default_schedule,
                                     int default_steps);
SamplerOptions sampler_options(const Args& a);
// --steps, or with --nfe N the most steps sampler s fits in N evaluations.
int sampling_steps(const Args& a, const SamplerInfo& s);
ScheduleOptions schedule_options(const Args& a);
// All of the above into a Stable Diffusion request (sampler, schedule, steps
// and their options); returns the sampler.
const SamplerInfo& set_sd_sampling(const Args& a, SdRequest& req);

}  // namespace tweedie::cli
