// Guidance flags shared by the subcommands that sample (sample, eval, bench
// fid, generate): one per option of each registered guidance rule
// (include/tweedie/guide/guidance.h), with the rule's help, range and
// default; values are validated where the rule declares them. --cfg itself
// stays each command's own option (the defaults differ).
#pragma once
#include <string>
#include <vector>

#include "cli.h"
#include "model_spec.h"
#include "tweedie/guide/guidance.h"

namespace tweedie::cli {

std::vector<Args::Opt> guidance_opts();

// The guidance for these arguments. cfg: the command's CFG scale; labelled:
// whether the samples carry class labels (needs names what supplies them in
// errors, e.g. "--class"); seed: the command's --seed (CADS draws its noise
// from a seed derived from it, independent of the start noise). Options that cannot
// act (a negative class without labels, a rescale without --cfg, ...) are an
// Error naming the option.
GuidanceOptions guidance_options(const Args& a, const LoadedModel& model, double cfg, bool labelled,
                                 const std::string& needs, uint64_t seed);

// The rules `tweedie generate` takes for Stable Diffusion (prompts, latent
// networks): --cfg-rescale, --guidance-interval, --cfg-schedule, --pag,
// --pag-sites, --sag, --sag-site, with the same meaning and checks.
std::vector<Args::Opt> sd_guidance_opts();
GuidanceOptions sd_guidance_options(const Args& a, double cfg);

}  // namespace tweedie::cli
