// tweedie bench NAME: the benchmarks, each a cmd_bench_*.cpp file that
// registers itself with BenchRegistrar (cli.h).
#include <cstdio>
#include <string>

#include "cli.h"
#include "tweedie/core/error.h"

namespace tweedie::cli {
namespace {

int run(int argc, char** argv) {
  if (argc >= 1 && bench_commands().contains(argv[0])) return bench_commands().find(argv[0]).run(argc - 1, argv + 1);
  const std::string known = bench_commands().names();
  if (argc >= 1 && (std::string(argv[0]) == "--help" || std::string(argv[0]) == "-h")) {
    std::printf("usage: tweedie bench NAME [options]\n\nbenchmarks:\n");
    for (auto& b : bench_commands().all()) std::printf("  %-10s %s\n", b.name.c_str(), b.summary.c_str());
    return 0;
  }
  fail("tweedie bench: expected one of: ", known, argc >= 1 ? std::string(" (got '") + argv[0] + "')" : "");
}

CommandRegistrar reg({"bench", "benchmarks: 'tweedie bench --help' lists them", run});

}  // namespace
}  // namespace tweedie::cli
