// tweedie samplers: every sampler and schedule with a description and reference.
#include <cstdio>

#include "cli.h"
#include "tweedie/process/schedule.h"
#include "tweedie/sample/sampler.h"

namespace tweedie::cli {
namespace {

int run(int argc, char** argv) {
  Args args("samplers", "", {});
  if (!args.parse(argc, argv)) return 0;
  std::printf("samplers (name, order or 'sde', invertible, description; reference):\n");
  for (auto& s : samplers()) {
    std::string alias;
    for (auto& a : s.aliases) alias += (alias.empty() ? " (also " : ", ") + a;
    if (!alias.empty()) alias += ")";
    std::printf("  %-16s %-4s %-4s %s%s; %s\n", s.name.c_str(),
                s.stochastic ? "sde" : std::to_string(s.order).c_str(), s.invertible ? "inv" : "",
                s.description.c_str(), alias.c_str(), s.reference.c_str());
  }
  std::printf("\nschedules:\n");
  for (auto& s : schedules()) std::printf("  %-16s %s; %s\n", s.name.c_str(), s.description.c_str(), s.reference.c_str());
  return 0;
}

CommandRegistrar reg({"samplers", "list samplers and step schedules with their references", run});

}  // namespace
}  // namespace tweedie::cli
