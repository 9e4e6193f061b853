// Shared test fixtures: small Gaussian mixtures, the exact PF-ODE reference
// solution, and convergence-order measurement.
#pragma once
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include <gtest/gtest.h>

#include "tweedie/core/error.h"
#include "tweedie/io/safetensors.h"
#include "tweedie/models/gmm.h"
#include "tweedie/process/schedule.h"
#include "tweedie/sample/sampler.h"

namespace tweedie::testing {

// The message of the Error f throws ("" if it throws none).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Two training checkpoints hold the same tensors (timings and the global RNG
// aside): a resumed run matches an uninterrupted one.
inline void expect_same_checkpoints(const std::string& a, const std::string& b) {
  auto ca = load_safetensors(a), cb = load_safetensors(b);
  int compared = 0;
  for (auto& [k, v] : ca.tensors) {
    if (k == "train.seconds" || k.rfind("rng.global", 0) == 0) continue;
    ASSERT_NE(cb.find(k), nullptr) << k;
    EXPECT_TRUE(torch::equal(v, cb.at(k))) << k;
    ++compared;
  }
  EXPECT_GT(compared, 20);
}

inline std::string source_path(const std::string& rel) { return std::string(TWEEDIE_SOURCE_DIR) + "/" + rel; }

// A 2-D mixture of three well-separated, not too sharp components, two classes.
inline GaussianMixture test_mixture() {
  GaussianMixture m;
  m.shape = {2};
  m.weights = torch::tensor({0.5, 0.3, 0.2}, torch::kFloat64);
  m.means = torch::tensor({1.0, 0.5, -1.2, 0.8, 0.2, -1.3}, torch::kFloat64).reshape({3, 2});
  m.variances = torch::tensor({0.09, 0.04, 0.05, 0.12, 0.08, 0.06}, torch::kFloat64).reshape({3, 2});
  m.classes = {0, 1, 1};
  return m;
}

// Exact probability-flow ODE solution from level s0 to s1 (either direction,
// both > 0) by classic RK4 in u = log s, where dx/du = x - x0(x, s) for every
// process (process.h). Float64 throughout.
inline torch::Tensor pf_ode_reference(Denoiser& d, torch::Tensor x, double s0, double s1, const Cond& c = {},
                                      int n = 2000) {
  x = x.to(torch::kFloat64);
  const double u0 = std::log(s0), u1 = std::log(s1), h = (u1 - u0) / n;
  auto f = [&](const torch::Tensor& y, double u) { return y - d.predict(y, std::exp(u), c).x0(); };
  for (int i = 0; i < n; ++i) {
    double u = u0 + i * h;
    auto k1 = f(x, u), k2 = f(x + k1 * (h / 2), u + h / 2), k3 = f(x + k2 * (h / 2), u + h / 2),
         k4 = f(x + k3 * h, u + h);
    x = x + (k1 + 2 * k2 + 2 * k3 + k4) * (h / 6);
  }
  return x;
}

// Levels from s_max to s_min (no terminal 0), Karras-spaced.
inline std::vector<double> karras_levels(double s_max, double s_min, int steps, double rho = 7.0) {
  std::vector<double> s(steps + 1);
  double hi = std::pow(s_max, 1 / rho), lo = std::pow(s_min, 1 / rho);
  for (int i = 0; i <= steps; ++i) s[i] = std::pow(hi + double(i) / steps * (lo - hi), rho);
  return s;
}

// Levels uniform in log-SNR from s_max to s_min (no terminal 0).
inline std::vector<double> lambda_levels(const Process& p, double s_max, double s_min, int steps) {
  std::vector<double> s(steps + 1);
  double l0 = p.lambda(s_max), l1 = p.lambda(s_min);
  for (int i = 0; i <= steps; ++i) s[i] = p.s_of_lambda(l0 + (l1 - l0) * i / steps);
  return s;
}

// Mean endpoint error of a deterministic sampler against the exact solution.
inline double endpoint_error(const SamplerInfo& info, GMMDenoiser& d, const torch::Tensor& x_start,
                             const std::vector<double>& levels, const torch::Tensor& reference,
                             SamplerOptions opt = {}) {
  SamplerRun run(d, levels, {}, opt);
  auto out = run_sampler(info, run, x_start.clone());
  return (out.to(torch::kFloat64) - reference).norm(2, 1).mean().item<double>();
}

// Empirical convergence order: log2(err(n)/err(2n)) for each consecutive pair.
inline std::vector<double> orders(const std::vector<double>& errs) {
  std::vector<double> o;
  for (size_t i = 1; i < errs.size(); ++i) o.push_back(std::log2(errs[i - 1] / errs[i]));
  return o;
}

}  // namespace tweedie::testing
