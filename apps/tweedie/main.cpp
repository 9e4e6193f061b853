// tweedie: one binary, one subcommand per file (cmd_*.cpp).
#include <cstdio>
#include <cstring>
#include <iostream>

#include <torch/torch.h>

#include "cli.h"
#include "tweedie/core/error.h"
#include "tweedie/core/runtime.h"

int main(int argc, char** argv) {
  using namespace tweedie::cli;
  auto usage = [] {
    std::cout << "usage: tweedie <command> [options]\n\ncommands:\n";
    for (auto& c : commands().all()) std::printf("  %-12s %s\n", c.name.c_str(), c.summary.c_str());
    std::cout << "\nRun 'tweedie <command> --help' for a command's options.\n";
  };
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    usage();
    return argc < 2 ? 1 : 0;
  }
  tweedie::configure_threads();
  tweedie::configure_allocator();
  if (!commands().contains(argv[1])) {
    std::fprintf(stderr, "error: unknown command '%s' (run 'tweedie --help')\n", argv[1]);
    return 2;
  }
  try {
    return commands().find(argv[1]).run(argc - 2, argv + 2);
  } catch (const tweedie::Error& e) {
    std::fprintf(stderr, "\nerror: %s\n", e.what());
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "\nerror: %s\n", e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nerror: %s\n", e.what());
  }
  return 2;
}
