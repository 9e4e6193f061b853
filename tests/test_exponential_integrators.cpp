// Exponential-integrator samplers (DPM-Solver, DPM-Solver++, UniPC, DEIS,
// RES) and the Brownian tree: equalities with DDIM, inversion round trips,
// seed determinism, sample moments of the SDE samplers, edge levels
// (flow s = 1, final s = 0), and the law of the Brownian tree. Convergence
// orders are checked for every deterministic sampler in test_order.cpp.
#include <gtest/gtest.h>

#include "../src/sample/brownian_tree.h"
#include "testing.h"

using namespace tweedie;
using namespace tweedie::testing;

namespace {

const std::vector<std::string> kDeterministic = {"dpm-solver-1", "dpm-solver-2", "dpm-solver-3", "dpmpp-2s",
                                                 "dpmpp-2m",     "dpmpp-2m-v2",  "dpmpp-3m",     "unipc-bh1",
                                                 "unipc-bh2",    "deis",         "res-multistep"};
const std::vector<std::string> kStochastic = {"dpmpp-2s-a", "dpmpp-2m-sde", "dpmpp-3m-sde", "dpmpp-sde"};

torch::Generator seeded(uint64_t s) { return at::make_generator<at::CPUGeneratorImpl>(s); }

torch::Tensor run(const std::string& name, Denoiser& d, std::vector<double> levels, torch::Tensor x,
                  torch::Generator gen = {}, StepCallback cb = {}) {
  SamplerRun r(d, std::move(levels), {}, {}, std::move(gen));
  r.callback = std::move(cb);
  return run_sampler(find_sampler(name), r, std::move(x));
}

TEST(ExponentialIntegrators, Registered) {
  for (auto& n : kDeterministic) {
    auto& i = find_sampler(n);
    EXPECT_FALSE(i.stochastic) << n;
    EXPECT_TRUE(i.invertible) << n;
  }
  for (auto& n : kStochastic) EXPECT_TRUE(find_sampler(n).stochastic) << n;
}

// DPM-Solver-1 is DDIM (Lu et al. 2022, Sec. 3.3); the first step of every
// multistep solver is the first-order step, written as DDIM's expression.
TEST(ExponentialIntegrators, FirstOrderStepsEqualDDIM) {
  auto proc = make_process("vp");
  GMMDenoiser d(test_mixture(), proc);
  auto x = at::randn({256, 2}, seeded(1)) * 14.6f;
  auto levels = make_schedule("karras", *proc, 12);
  EXPECT_TRUE(torch::equal(run("dpm-solver-1", d, levels, x), run("ddim", d, levels, x)));
  std::vector<double> one = {levels[0], levels[1]};
  auto ddim1 = run("ddim", d, one, x);
  for (auto n : {"dpmpp-2m", "dpmpp-2m-v2", "dpmpp-3m", "deis", "res-multistep"}) {
    torch::Tensor first;
    run(n, d, levels, x, {}, [&](const StepInfo& s) {
      if (s.step == 0) first = s.x.clone();
    });
    EXPECT_TRUE(torch::equal(first, ddim1)) << n;
  }
  // UniPC's first predictor is the same step in the (s'/s) x form.
  for (auto n : {"unipc-bh1", "unipc-bh2"}) EXPECT_TRUE(torch::allclose(run(n, d, one, x), ddim1, 1e-5, 1e-5)) << n;
}

// Inversion from near-clean data to high noise and sampling back returns the
// input, with an error that shrinks as the steps grow.
TEST(ExponentialIntegrators, InversionRoundTrip) {
  auto proc = make_process("vp");
  GMMDenoiser d(test_mixture(), proc);
  auto gen = seeded(3);
  auto x =
      proc->add_noise(d.mixture().sample(64, gen).to(torch::kFloat64), at::randn({64, 2}, gen, torch::kFloat64), 0.05);
  for (auto& name : kDeterministic) {
    std::vector<double> errs;
    for (int n : {16, 32, 64}) {
      auto down = lambda_levels(*proc, 14.6, 0.05, n);
      std::vector<double> up(down.rbegin(), down.rend());
      SamplerRun inv(d, up);
      auto z = run_inversion(find_sampler(name), inv, x.clone());
      EXPECT_TRUE(torch::isfinite(z).all().item<bool>()) << name;
      auto back = run(name, d, down, z);
      errs.push_back((back - x).norm(2, 1).mean().item<double>());
    }
    EXPECT_LT(errs[1], errs[0]) << name;
    EXPECT_LT(errs[2], errs[1]) << name;
    EXPECT_LT(errs[2], find_sampler(name).order == 1 ? 0.05 : 1e-3) << name << ": round-trip error " << errs[2];
  }
}

// Every sampler is finite from flow's s = 1 (lambda = -inf) and to s = 0
// (lambda = +inf); the deterministic ones also stay accurate from s = 1.
TEST(ExponentialIntegrators, EdgeLevels) {
  for (auto spec : {"flow", "vp", "edm"}) {
    auto proc = make_process(spec);
    GMMDenoiser d(test_mixture(), proc);
    auto levels = make_schedule("karras", *proc, 10);
    auto x = at::randn({32, 2}, seeded(5), torch::kFloat64) * levels[0];
    for (auto names : {kDeterministic, kStochastic})
      for (auto& n : names) {
        auto out = run(n, d, levels, x, seeded(6));
        EXPECT_TRUE(torch::isfinite(out).all().item<bool>()) << n << " on " << spec;
      }
  }
  auto flow = make_process("flow");
  GMMDenoiser d(test_mixture(), flow);
  auto x = at::randn({64, 2}, seeded(8), torch::kFloat64);
  auto levels = karras_levels(1.0, 0.05, 64);
  ASSERT_EQ(levels[0], 1.0);
  auto ref = pf_ode_reference(d, x, 1.0, 0.05);
  for (auto& n : kDeterministic) {
    double err = (run(n, d, levels, x) - ref).norm(2, 1).mean().item<double>();
    EXPECT_LT(err, find_sampler(n).order == 1 ? 0.03 : 5e-3) << n << " from flow s = 1";
  }
}

TEST(ExponentialIntegrators, StochasticSeedDeterminism) {
  auto proc = make_process("vp");
  GMMDenoiser d(test_mixture(), proc);
  auto levels = make_schedule("karras", *proc, 15);
  auto x = at::randn({64, 2}, seeded(9)) * levels[0];
  for (auto& n : kStochastic) {
    auto a = run(n, d, levels, x, seeded(10)), b = run(n, d, levels, x, seeded(10)),
         c = run(n, d, levels, x, seeded(11));
    EXPECT_TRUE(torch::equal(a, b)) << n;
    EXPECT_FALSE(torch::allclose(a, c)) << n;
  }
}

// 4000 samples from pure noise, 50 Karras steps: mean and covariance within
// 4 standard errors (estimated from the samples) plus a 0.02 bias allowance.
TEST(ExponentialIntegrators, StochasticSamplersMatchMixtureMoments) {
  auto gmm = test_mixture();
  auto mean = gmm.mean(), cov = gmm.covariance();
  for (auto spec : {"vp", "flow"}) {
    auto proc = make_process(spec);
    GMMDenoiser d(gmm, proc);
    auto levels = make_schedule("karras", *proc, 50);
    for (auto& n : kStochastic) {
      auto x = at::randn({4000, 2}, seeded(12), torch::kFloat64) * levels[0];
      auto out = run(n, d, levels, x, seeded(13));
      const double N = out.size(0);
      auto m = out.mean(0), c = out - m;
      auto prods = c.unsqueeze(2) * c.unsqueeze(1);  // [N, 2, 2]
      auto cv = prods.mean(0);
      auto se_m = out.std(0) / std::sqrt(N), se_c = prods.std(0) / std::sqrt(N);
      EXPECT_TRUE(((m - mean).abs() < se_m * 4 + 0.02).all().item<bool>())
          << n << " on " << spec << ": mean " << m << " expected " << mean;
      EXPECT_TRUE(((cv - cov).abs() < se_c * 4 + 0.02).all().item<bool>())
          << n << " on " << spec << ": covariance " << cv << " expected " << cov;
    }
  }
}

// dpmpp-2m-v2 is 2M on steps uniform in lambda and first order on uneven ones
// (why its declared order is 1; see dpm_solver_pp.cpp).
TEST(ExponentialIntegrators, TwoMV2OrderDependsOnSpacing) {
  auto proc = make_process("vp");
  GMMDenoiser d(test_mixture(), proc);
  auto x = at::randn({64, 2}, seeded(7), torch::kFloat64) * 14.6;
  auto uniform = lambda_levels(*proc, 14.6, 0.05, 32);
  EXPECT_TRUE(torch::allclose(run("dpmpp-2m-v2", d, uniform, x), run("dpmpp-2m", d, uniform, x), 1e-9, 1e-9));
  auto ref = pf_ode_reference(d, x, 14.6, 0.05);
  std::vector<double> e2m, ev2;
  for (int n : {32, 64, 128}) {
    e2m.push_back(endpoint_error(find_sampler("dpmpp-2m"), d, x, karras_levels(14.6, 0.05, n), ref));
    ev2.push_back(endpoint_error(find_sampler("dpmpp-2m-v2"), d, x, karras_levels(14.6, 0.05, n), ref));
  }
  EXPECT_GT(orders(e2m).back(), 1.7);
  EXPECT_LT(orders(ev2).back(), 1.3);
}

TEST(BrownianTree, IncrementsAreIndependentWithVariance) {
  const int64_t N = 40000;
  BrownianTree t(torch::zeros({N}, torch::kFloat64), 0.03, 14.6, 1234);
  std::vector<std::pair<double, double>> iv = {{0.03, 0.1}, {0.1, 1.0}, {1.0, 1.37}, {2.0, 9.5}, {9.5, 14.6}};
  std::vector<torch::Tensor> inc;
  for (auto [a, b] : iv) inc.push_back(t.W(b) - t.W(a));
  for (size_t i = 0; i < iv.size(); ++i) {
    const double ds = iv[i].second - iv[i].first, var = inc[i].pow(2).mean().item<double>();
    EXPECT_NEAR(var / ds, 1.0, 4 * std::sqrt(2.0 / N)) << "interval " << i;
    EXPECT_NEAR(inc[i].mean().item<double>() / std::sqrt(ds), 0.0, 4 / std::sqrt(double(N)));
    for (size_t j = 0; j < i; ++j) {
      auto corr = (inc[i] * inc[j]).mean() / (inc[i].pow(2).mean() * inc[j].pow(2).mean()).sqrt();
      EXPECT_NEAR(corr.item<double>(), 0.0, 4 / std::sqrt(double(N))) << i << "," << j;
    }
  }
  // Overlapping increments: Cov(W(b) - W(a), W(c) - W(a)) = b - a for a < b < c.
  auto x = t.W(1.0) - t.W(0.5), y = t.W(3.0) - t.W(0.5);
  EXPECT_NEAR((x * y).mean().item<double>() / 0.5, 1.0, 0.05);
  // noise() is standard normal and follows the sign convention W(s') - W(s).
  auto z = t.noise(2.0, 1.5);
  EXPECT_NEAR(z.std().item<double>(), 1.0, 0.02);
  EXPECT_TRUE(torch::allclose(z, (t.W(1.5) - t.W(2.0)) / std::sqrt(0.5)));
}

TEST(BrownianTree, PathIndependentOfQueryOrder) {
  auto like = torch::zeros({8}, torch::kFloat32);
  BrownianTree coarse(like, 0.02, 10.0, 77), fine(like, 0.02, 10.0, 77), other(like, 0.02, 10.0, 78);
  auto cl = karras_levels(10.0, 0.02, 5), fl = karras_levels(10.0, 0.02, 40);
  for (double s : fl) fine.W(s);
  for (auto it = cl.rbegin(); it != cl.rend(); ++it) coarse.W(*it);  // other order, fewer points
  for (double s : cl) {
    EXPECT_TRUE(torch::equal(coarse.W(s), fine.W(s))) << s;
    if (s > 0.02) EXPECT_FALSE(torch::equal(coarse.W(s), other.W(s))) << s;
  }
  EXPECT_TRUE(torch::equal(coarse.noise(10.0, 3.3), fine.noise(10.0, 3.3)));
  EXPECT_EQ(coarse.noise(1.0, 0.5).dtype(), torch::kFloat32);
}

}  // namespace
