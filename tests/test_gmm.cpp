// The analytic denoiser is exact: its posterior mean matches a Monte-Carlo
// estimate, its moments match its samples, and malformed files are rejected.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/guide/cfg.h"

using namespace tweedie;
using namespace tweedie::testing;

namespace {

TEST(GMM, PosteriorMeanMatchesMonteCarlo) {
  // E[x0 | x] estimated by importance weighting exact prior samples with the
  // Gaussian likelihood N(x; a x0, s^2).
  auto m = test_mixture();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  auto x0s = m.sample(400000, gen).to(torch::kFloat64);
  for (auto name : {"vp", "flow"}) {
    auto p = make_process(name);
    double s = p->space() == Space::Flow ? 0.45 : 0.6;
    auto x = torch::tensor({0.4, -0.2, -1.0, 0.7}, torch::kFloat64).reshape({2, 2});
    auto exact = m.posterior_mean(x, s, *p, {});
    for (int i = 0; i < 2; ++i) {
      auto lw = -((x[i] - x0s * p->a(s)).pow(2).sum(1)) / (2 * s * s);
      auto w = torch::softmax(lw, 0);
      auto mc = (w.unsqueeze(1) * x0s).sum(0);
      EXPECT_LT((mc - exact[i]).abs().max().item<double>(), 0.01) << name;
    }
  }
}

TEST(GMM, MomentsMatchSamples) {
  auto m = test_mixture();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto x = m.sample(200000, gen).to(torch::kFloat64);
  EXPECT_LT((x.mean(0) - m.mean()).abs().max().item<double>(), 0.01);
  auto xc = x - x.mean(0);
  EXPECT_LT((xc.t().mm(xc) / x.size(0) - m.covariance()).abs().max().item<double>(), 0.02);
}

TEST(GMM, ClassConditioningAndCFG) {
  auto m = test_mixture();
  auto p = make_process("vp");
  auto d = std::make_shared<GMMDenoiser>(m, p);
  auto x = torch::tensor({0.3, 0.1}, torch::kFloat64).reshape({1, 2});
  Cond c;
  c.labels = torch::tensor({1}, torch::kInt64);
  // Class 1 = components 1 and 2 only: equals a mixture built from them.
  GaussianMixture sub = m;
  sub.weights = m.weights.slice(0, 1) / m.weights.slice(0, 1).sum();
  sub.means = m.means.slice(0, 1);
  sub.variances = m.variances.slice(0, 1);
  sub.classes = {1, 1};
  auto cond = d->predict(x, 1.3, c).x0();
  EXPECT_TRUE(torch::allclose(cond, sub.posterior_mean(x, 1.3, *p, {}), 1e-12, 1e-12));
  auto uncond = d->predict(x, 1.3, c.null_like()).x0();
  CFGDenoiser g(d, 3.0);
  auto guided = g.predict(x, 1.3, c);
  EXPECT_TRUE(torch::allclose(guided.x0(), uncond + 3.0 * (cond - uncond), 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(guided.renoise_eps(), d->predict(x, 1.3, c.null_like()).eps(), 1e-12, 1e-12));
  CFGDenoiser one(d, 1.0);
  EXPECT_TRUE(torch::equal(one.predict(x, 1.3, c).x0(), cond));
}

std::string write_tmp(const std::string& text) {
  std::string path = ::testing::TempDir() + "/gmm_" + std::to_string(std::hash<std::string>()(text)) + ".json";
  std::ofstream(path) << text;
  return path;
}

std::string error_of(const std::string& json) {
  try {
    GaussianMixture::load(write_tmp(json));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(GMM, MalformedFilesAreRejectedWithTheCulprit) {
  EXPECT_NE(error_of("{\"shape\": [2], \"weights\": [1]").find("malformed JSON"), std::string::npos);
  EXPECT_NE(error_of("{\"shape\": [2], \"weights\": [1], \"means\": [[0,0]]}").find("missing key 'variances'"),
            std::string::npos);
  EXPECT_NE(error_of("{\"shape\": [2], \"weights\": [1], \"means\": [[0,0,0]], \"variances\": [[1,1]]}")
                .find("'means[0]' has 3 values"),
            std::string::npos);
  EXPECT_NE(error_of("{\"shape\": [2], \"weights\": [1], \"means\": [[0,0]], \"variances\": [[1,0]]}")
                .find("must be positive"),
            std::string::npos);
  EXPECT_NE(error_of("{\"shape\": [2], \"weights\": [], \"means\": [], \"variances\": []}").find("'weights' is empty"),
            std::string::npos);
  EXPECT_NE(error_of("{\"shape\": [2], \"weights\": [1], \"means\": [[0,0]], \"variances\": [[1,1]], \"colour\": 1}")
                .find("unknown key 'colour'"),
            std::string::npos);
  EXPECT_NE(error_of("[1, 2]").find("expected a JSON object"), std::string::npos);
  try {
    GaussianMixture::load("/nonexistent/x.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.json"), std::string::npos);
  }
}

TEST(GMM, SaveLoadRoundTrip) {
  auto m = test_mixture();
  std::string path = ::testing::TempDir() + "/gmm_roundtrip.json";
  m.save(path);
  auto r = GaussianMixture::load(path);
  EXPECT_TRUE(torch::allclose(r.means, m.means, 0, 1e-15));
  EXPECT_TRUE(torch::allclose(r.variances, m.variances, 0, 1e-15));
  EXPECT_EQ(r.classes, m.classes);
  for (auto f : {"models/gmm/ring2d.json", "models/gmm/mix64.json"}) EXPECT_NO_THROW(GaussianMixture::load(source_path(f)));
}

}  // namespace
