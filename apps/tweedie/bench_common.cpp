#include "bench_common.h"

#include <sstream>

#include "tweedie/core/error.h"

namespace tweedie::cli {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, ',');)
    if (!t.empty()) v.push_back(t);
  return v;
}

std::vector<int> nfe_budgets(const std::string& list, const char* cmd) {
  std::vector<int> budgets;
  for (auto& b : split(list)) {
    try {
      budgets.push_back(std::stoi(b));
    } catch (...) {
      fail(cmd, ": --nfe entry '", b, "' is not an integer");
    }
    check(budgets.back() >= 1, cmd, ": NFE budgets must be >= 1");
  }
  return budgets;
}

}  // namespace tweedie::cli
