// Prediction conversions are lossless for every parameterization and process,
// and agree with the definitions written out independently here.
#include <gtest/gtest.h>

#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/process/prediction.h"

using namespace tweedie;

namespace {

class PredictionTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PredictionTest, EveryParameterizationRoundTrips) {
  auto p = make_process(GetParam());
  torch::manual_seed(0);
  auto x0 = torch::randn({5, 3}, torch::kFloat64), eps = torch::randn({5, 3}, torch::kFloat64);
  for (double s : {0.05, 0.7, 3.0}) {
    if (p->space() == Space::Flow) s = std::min(s / 4, 0.95);
    auto x = p->add_noise(x0, eps, s);
    for (auto k : {PredKind::Eps, PredKind::X0, PredKind::V, PredKind::Velocity, PredKind::Score, PredKind::EDM}) {
      if (k == PredKind::EDM && p->space() == Space::Flow) continue;
      Parameterization par{k, 0.5};
      auto target = Prediction::target(par, x0, eps, s, *p);
      Prediction pr(par, target, x, s, *p);
      EXPECT_TRUE(torch::allclose(pr.x0(), x0, 1e-10, 1e-10)) << to_string(k) << " s=" << s;
      EXPECT_TRUE(torch::allclose(pr.eps(), eps, 1e-10, 1e-10)) << to_string(k) << " s=" << s;
      EXPECT_TRUE(torch::allclose(pr.as(par), target, 1e-10, 1e-10)) << to_string(k);
    }
  }
}

TEST_P(PredictionTest, DefinitionsInModelSpace) {
  auto p = make_process(GetParam());
  torch::manual_seed(1);
  auto x0 = torch::randn({4}, torch::kFloat64), eps = torch::randn({4}, torch::kFloat64);
  const double s = p->space() == Space::Flow ? 0.3 : 1.7;
  auto x = p->add_noise(x0, eps, s);
  Prediction pr = Prediction::from_x0(x0, x, s, *p);
  const double al = p->alpha_t(s), sg = p->sigma_t(s);
  auto xt = x * p->model_scale(s);
  EXPECT_TRUE(torch::allclose(xt, x0 * al + eps * sg, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(pr.v(), eps * al - x0 * sg, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(pr.score(), -eps / sg, 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(pr.velocity(), eps - x0, 1e-12, 1e-12));
  // Tweedie: x0 = (x_t + sigma_t^2 score) / alpha_t
  EXPECT_TRUE(torch::allclose((xt + pr.score() * (sg * sg)) / al, x0, 1e-12, 1e-12));
}

INSTANTIATE_TEST_SUITE_P(Processes, PredictionTest,
                         ::testing::Values("vp", "vp:cosine", "vp+ztsnr", "vp-cont", "ve", "edm", "flow"),
                         [](const auto& i) {
                           std::string n = i.param;
                           for (auto& c : n)
                             if (!isalnum((unsigned char)c)) c = '_';
                           return n;
                         });

TEST(Prediction, VPIsNormalized) {
  auto p = make_process("vp");
  for (double s : {0.03, 1.0, 14.0}) EXPECT_NEAR(p->alpha_t(s) * p->alpha_t(s) + p->sigma_t(s) * p->sigma_t(s), 1, 1e-12);
}

TEST(Prediction, EDMPreconditioningConstants) {
  Parameterization par{PredKind::EDM, 0.5};
  // Karras et al. 2022 Table 1.
  const double s = 2.0, sd = 0.5;
  EXPECT_NEAR(par.c_skip(s), sd * sd / (s * s + sd * sd), 1e-15);
  EXPECT_NEAR(par.c_out(s), s * sd / std::sqrt(s * s + sd * sd), 1e-15);
  EXPECT_NEAR(par.c_in(s), 1 / std::sqrt(s * s + sd * sd), 1e-15);
}

TEST(Prediction, UnknownKindIsAnError) {
  EXPECT_THROW(pred_kind_from_string("noise"), Error);
}

}  // namespace
