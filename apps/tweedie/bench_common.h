// Helpers shared by the `tweedie bench` subcommands (cmd_bench_*.cpp).
#pragma once
#include <string>
#include <vector>

namespace tweedie::cli {

// "a,b,,c" -> {"a", "b", "c"}.
std::vector<std::string> split(const std::string& s);
// --nfe "10,20,50" -> {10, 20, 50}; Error naming the command and entry.
std::vector<int> nfe_budgets(const std::string& list, const char* cmd);

}  // namespace tweedie::cli
