// Convergence order of every deterministic sampler against the exact PF-ODE
// solution of a Gaussian mixture, on VP (k-space), EDM and flow processes.
#include <gtest/gtest.h>

#include "testing.h"

using namespace tweedie;
using namespace tweedie::testing;

namespace {

struct Case {
  std::string process;
  double s_max, s_min;
};

class OrderTest : public ::testing::TestWithParam<std::tuple<std::string, Case>> {};

TEST_P(OrderTest, ConvergesAtItsOrder) {
  auto [name, c] = GetParam();
  const SamplerInfo& info = find_sampler(name);
  auto proc = make_process(c.process);
  GMMDenoiser d(test_mixture(), proc);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  auto x = at::randn({64, 2}, gen, torch::kFloat64) * c.s_max;
  auto ref = pf_ode_reference(d, x, c.s_max, c.s_min);
  std::vector<int> ns = {16, 32, 64, 128};
  std::vector<double> errs;
  for (int n : ns) errs.push_back(endpoint_error(info, d, x, lambda_levels(*proc, c.s_max, c.s_min, n), ref));
  auto o = orders(errs);
  std::string msg = name + " on " + c.process + ": errors";
  for (double e : errs) msg += " " + std::to_string(e);
  // The asymptotic order shows in the finest pair; allow 0.35 slack.
  EXPECT_GT(o.back(), info.order - 0.35) << msg;
  EXPECT_LT(o.back(), info.order + 1.2) << msg;  // not suspiciously exact
  EXPECT_LT(errs.back(), 0.05) << msg;
}

std::vector<std::string> deterministic() {
  std::vector<std::string> v;
  for (auto& s : samplers())
    if (!s.stochastic) v.push_back(s.name);
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, OrderTest,
                         ::testing::Combine(::testing::ValuesIn(deterministic()),
                                            ::testing::Values(Case{"vp", 14.6, 0.05}, Case{"edm", 40.0, 0.05},
                                                              Case{"flow", 0.995, 0.05})),
                         [](const auto& info) {
                           std::string n = std::get<0>(info.param) + "_" + std::get<1>(info.param).process;
                           for (auto& ch : n)
                             if (!isalnum((unsigned char)ch)) ch = '_';
                           return n;
                         });

}  // namespace
