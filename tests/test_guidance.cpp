// Guidance rules on exact answers: CFG with a negative class against the
// closed-form class posterior means of the Gaussian mixture, CFG-rescale and
// dynamic thresholding against hand computations, schedules against their
// closed forms, the guidance interval's saved evaluations counted by a
// wrapper, CADS on a tiny class-conditional network against a hand-installed
// hook, the composition order of make_guidance, and every sampler running
// under the composed rules.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>

#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/guide/cads.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/guide/cfg_rescale.h"
#include "tweedie/guide/cfg_schedule.h"
#include "tweedie/guide/dynamic_threshold.h"
#include "tweedie/guide/guidance.h"
#include "tweedie/guide/guidance_interval.h"
#include "tweedie/models/net_denoiser.h"
#include "tweedie/models/network.h"

using namespace tweedie;
using namespace tweedie::testing;

namespace {

bool same(const torch::Tensor& a, const torch::Tensor& b, double tol = 1e-12) {
  return a.sizes() == b.sizes() && torch::allclose(a, b, tol, tol);
}

// E[x0 | x, class k] written out from the mixture's parameters: responsibilities
// over the class's components of N(x; a mu_j, a^2 v_j + s^2), each with the
// Gaussian posterior mean mu_j + a v_j / (a^2 v_j + s^2) (x - a mu_j).
torch::Tensor class_posterior_mean(const GaussianMixture& m, const Process& p, const torch::Tensor& x, double s,
                                   int64_t k) {
  const double a = p.a(s);
  std::vector<torch::Tensor> logw, means;
  for (int64_t j = 0; j < m.components(); ++j) {
    if (m.classes[j] != k) continue;
    auto mu = m.means[j], v = m.variances[j];
    auto var = v * (a * a) + s * s;
    auto lp = -0.5 * ((x - mu * a).pow(2) / var + torch::log(2 * M_PI * var)).sum(1);
    logw.push_back(lp + std::log(m.weights[j].item<double>()));
    means.push_back(mu + v * a / var * (x - mu * a));
  }
  auto r = torch::softmax(torch::stack(logw, 1), 1);  // [N, K_k]
  return (r.unsqueeze(2) * torch::stack(means, 1)).sum(1);
}

Cond labels(std::vector<int64_t> l) {
  Cond c;
  c.labels = torch::tensor(l, torch::kInt64);
  return c;
}

torch::Tensor points(int64_t n, uint64_t seed = 3, double scale = 1.5) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn({n, 2}, gen, torch::kFloat64) * scale;
}

// Records the batch size of every call.
class Counting : public Denoiser {
 public:
  explicit Counting(DenoiserPtr d) : d_(std::move(d)) {}
  const Process& process() const override { return d_->process(); }
  Prediction predict(const torch::Tensor& x, double s, const Cond& c) override {
    rows.push_back(x.size(0));
    levels.push_back(s);
    return d_->predict(x, s, c);
  }
  std::vector<int64_t> rows;
  std::vector<double> levels;

 private:
  DenoiserPtr d_;
};

TEST(Guidance, NegativeClassIsCFGAwayFromThatClassExactly) {
  auto m = test_mixture();
  for (auto name : {"vp", "flow"}) {
    auto p = make_process(name);
    auto d = std::make_shared<GMMDenoiser>(m, p);
    auto x = points(5);
    const double s = std::string(name) == "flow" ? 0.6 : 1.3, w = 2.5;
    for (int64_t pos : {0, 1}) {
      const int64_t neg = 1 - pos;
      auto mp = class_posterior_mean(m, *p, x, s, pos), mn = class_posterior_mean(m, *p, x, s, neg);
      ASSERT_TRUE(same(d->predict(x, s, labels(std::vector<int64_t>(5, pos))).x0(), mp, 1e-10));
      CFGOptions o;
      o.scale = w;
      o.negative = negative_class(neg);
      CFGDenoiser g(d, o);
      auto out = g.predict(x, s, labels(std::vector<int64_t>(5, pos)));
      EXPECT_TRUE(same(out.x0(), mn + w * (mp - mn), 1e-10)) << name << " class " << pos;
      // the negative branch's eps is the renoise eps (CFG++)
      EXPECT_TRUE(same(out.renoise_eps(), d->predict(x, s, labels(std::vector<int64_t>(5, neg))).eps(), 1e-10));
    }
    // negative class -1 is the null class: plain CFG, bit for bit
    auto c = labels({1, 0, 1, 1, 0});
    CFGOptions o;
    o.scale = w;
    o.negative = negative_class(-1);
    EXPECT_TRUE(torch::equal(CFGDenoiser(d, o).predict(x, s, c).x0(), CFGDenoiser(d, w).predict(x, s, c).x0()));
  }
  EXPECT_NE(error_of([] { negative_class(0)(Cond{}); }).find("needs class labels"), std::string::npos);
}

TEST(Guidance, RescaleMatchesTheFormula) {
  // By hand: guided (0, 4) has std 2*sqrt(2), cond (1, 2) std sqrt(2)/2: ratio 1/4.
  auto g = torch::tensor({0.0, 4.0, 3.0, 3.0}, torch::kFloat64).reshape({2, 2});
  auto c = torch::tensor({1.0, 2.0, 5.0, 1.0}, torch::kFloat64).reshape({2, 2});
  auto r = cfg_rescale(g, c, 0.5);
  // row 0: 0.5 * (0, 1) + 0.5 * (0, 4) = (0, 2.5); row 1: zero std, unchanged
  EXPECT_TRUE(same(r, torch::tensor({0.0, 2.5, 3.0, 3.0}, torch::kFloat64).reshape({2, 2})));
  EXPECT_TRUE(torch::equal(cfg_rescale(g, c, 0.0), g));
  // std over all non-batch dims of [N, C, H, W]; phi = 1 gives the conditional std exactly
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto G = at::randn({3, 2, 4, 4}, gen, torch::kFloat64) * 3, C = at::randn({3, 2, 4, 4}, gen, torch::kFloat64);
  auto R = cfg_rescale(G, C, 1.0);
  EXPECT_TRUE(same(R.reshape({3, -1}).std(1), C.reshape({3, -1}).std(1), 1e-12));
  for (int64_t i = 0; i < 3; ++i) {
    const double k = C[i].std().item<double>() / G[i].std().item<double>();
    EXPECT_TRUE(same(cfg_rescale(G, C, 0.7)[i], G[i] * (0.7 * k + 0.3)));
  }
  // in CFG: phi = 0 is plain CFG bit for bit; phi > 0 rescales the guided x0 toward the conditional x0
  auto d = std::make_shared<GMMDenoiser>(test_mixture(), make_process("vp"));
  auto x = points(6);
  auto cond = labels({0, 1, 1, 0, 1, 0});
  CFGOptions o;
  o.scale = 4;
  EXPECT_TRUE(torch::equal(CFGDenoiser(d, o).predict(x, 0.8, cond).x0(), CFGDenoiser(d, 4).predict(x, 0.8, cond).x0()));
  o.rescale = 0.7;
  auto plain = CFGDenoiser(d, 4).predict(x, 0.8, cond).x0();
  EXPECT_TRUE(same(CFGDenoiser(d, o).predict(x, 0.8, cond).x0(), cfg_rescale(plain, d->predict(x, 0.8, cond).x0(), 0.7)));
  EXPECT_NE(error_of([&] { CFGDenoiser(d, CFGOptions{3, {}, {}, 1.5}); }).find("rescale must be in [0, 1]"),
            std::string::npos);
}

TEST(Guidance, IntervalSkipsTheNegativeBranchOutsideIt) {
  auto base = std::make_shared<GMMDenoiser>(test_mixture(), make_process("vp"));
  auto counting = std::make_shared<Counting>(base);
  GuidanceOptions g;
  g.cfg = 3;
  g.interval = {0.5, 2.0};
  auto guided = make_guidance(counting, g);
  auto x = points(4);
  auto c = labels({0, 1, 0, 1});
  CFGDenoiser cfg(base, 3);
  // (lo, hi]: 0.5 excluded, 2.0 included
  for (double s : {5.0, 2.0001, 2.0, 1.0, 0.5001, 0.5, 0.1}) {
    counting->rows.clear();
    auto out = guided->predict(x, s, c).x0();
    const bool inside = s > 0.5 && s <= 2.0;
    ASSERT_EQ(counting->rows.size(), 1u);
    EXPECT_EQ(counting->rows[0], inside ? 8 : 4) << s;
    EXPECT_TRUE(torch::equal(out, inside ? cfg.predict(x, s, c).x0() : base->predict(x, s, c).x0())) << s;
  }
  // an interval covering every level is plain CFG
  g.interval = {0.0, INFINITY};
  EXPECT_TRUE(torch::equal(make_guidance(base, g)->predict(x, 0.3, c).x0(), cfg.predict(x, 0.3, c).x0()));
  // over a whole run: 2N rows exactly at the levels inside the interval
  g.interval = {0.3, 3.0};
  counting->rows.clear(), counting->levels.clear();
  auto levels = make_schedule("karras", base->process(), 12);
  auto over_run = make_guidance(counting, g);
  SamplerRun run(*over_run, levels, c);
  run_sampler(find_sampler("euler"), run, x * levels[0]);
  ASSERT_EQ(counting->rows.size(), 12u);
  int inside = 0;
  for (size_t i = 0; i < counting->rows.size(); ++i) {
    const bool in = counting->levels[i] > 0.3 && counting->levels[i] <= 3.0;
    inside += in;
    EXPECT_EQ(counting->rows[i], in ? 8 : 4) << counting->levels[i];
  }
  EXPECT_GT(inside, 0);
  EXPECT_LT(inside, 12);
  EXPECT_NE(error_of([] { GuidanceInterval{2.0, 1.0}.validate(); }).find("lower bound must be below"), std::string::npos);
  EXPECT_NE(error_of([] { GuidanceInterval{-1.0, 1.0}.validate(); }).find("must be >= 0"), std::string::npos);
}

TEST(Guidance, SchedulesMatchTheirClosedForms) {
  // tau: normalized model time between the process's s_min (0) and s_max (1)
  auto flow = make_process("flow"), edm = make_process("edm"), vp = make_process("vp");
  for (double s : {0.1, 0.5, 0.9}) {
    EXPECT_NEAR(normalized_time(*flow, s), (s - flow->s_min()) / (flow->s_max() - flow->s_min()), 1e-12);
    EXPECT_NEAR(normalized_time(*edm, 10 * s), std::log(10 * s / edm->s_min()) / std::log(edm->s_max() / edm->s_min()),
                1e-12);
  }
  EXPECT_NEAR(normalized_time(*vp, vp->s_at_timestep(250)), 250.0 / 999, 1e-9);  // SD's table: t / T
  EXPECT_EQ(normalized_time(*edm, 1000), 1.0);
  EXPECT_EQ(normalized_time(*edm, 1e-5), 0.0);
  for (double tau : {0.0, 0.25, 0.5, 1.0}) {
    EXPECT_EQ(cfg_schedule_factor(CFGSchedule::Constant, tau), 1.0);
    EXPECT_NEAR(cfg_schedule_factor(CFGSchedule::Linear, tau), 2 * (1 - tau), 1e-15);
    EXPECT_NEAR(cfg_schedule_factor(CFGSchedule::Cosine, tau), 1 + std::cos(M_PI * tau), 1e-15);
  }
  // both rise from 0 (pure noise) to 2 and average 1: the constant schedule's mean strength
  for (auto k : {CFGSchedule::Linear, CFGSchedule::Cosine}) {
    double mean = 0;
    const int n = 100000;
    for (int i = 0; i < n; ++i) mean += cfg_schedule_factor(k, (i + 0.5) / n) / n;
    EXPECT_NEAR(mean, 1.0, 1e-8);
    EXPECT_NEAR(cfg_schedule_factor(k, 1.0), 0.0, 1e-15);
    EXPECT_NEAR(cfg_schedule_factor(k, 0.0), 2.0, 1e-15);
  }
  // on the mixture (flow: tau = (s - s_min) / (s_max - s_min)): x0 = u + w(s) (c - u), w(s) = 1 + (w - 1) f
  auto d = std::make_shared<GMMDenoiser>(test_mixture(), flow);
  auto x = points(3);
  auto c = labels({0, 1, 1});
  for (auto k : {CFGSchedule::Linear, CFGSchedule::Cosine}) {
    GuidanceOptions g;
    g.cfg = 3;
    g.schedule = k;
    auto guided = make_guidance(d, g);
    for (double s : {0.2, 0.5, 0.8}) {
      const double tau = (s - flow->s_min()) / (flow->s_max() - flow->s_min());
      const double f = k == CFGSchedule::Linear ? 2 * (1 - tau) : 1 + std::cos(M_PI * tau);
      const double w = 1 + 2 * f;
      auto u = d->predict(x, s, c.null_like()).x0(), xc = d->predict(x, s, c).x0();
      EXPECT_TRUE(same(guided->predict(x, s, c).x0(), u + w * (xc - u), 1e-10)) << to_string(k) << " " << s;
    }
  }
  // constant is plain CFG bit for bit
  GuidanceOptions g;
  g.cfg = 3;
  EXPECT_TRUE(torch::equal(make_guidance(d, g)->predict(x, 0.5, c).x0(), CFGDenoiser(d, 3).predict(x, 0.5, c).x0()));
  EXPECT_EQ(cfg_schedule_from_string("cosine"), CFGSchedule::Cosine);
  EXPECT_NE(error_of([] { cfg_schedule_from_string("quadratic"); }).find("'quadratic'"), std::string::npos);
}

TEST(Guidance, DynamicThresholdMatchesAHandComputation) {
  auto x0 = torch::tensor({0.5, -2.0, 3.0, 1.0, 0.2, -0.3, 0.1, 0.4}, torch::kFloat64).reshape({2, 2, 2});
  // row 0: |x0| sorted 0.5 1 2 3, the 0.5 quantile (linear) is 1.5 -> clamp to +-1.5, divide by 1.5
  // row 1: quantile 0.25 < 1 -> s = 1, and nothing exceeds 1: unchanged
  auto want = torch::tensor({0.5 / 1.5, -1.0, 1.0, 1.0 / 1.5, 0.2, -0.3, 0.1, 0.4}, torch::kFloat64).reshape({2, 2, 2});
  EXPECT_TRUE(same(dynamic_threshold(x0, 0.5), want));
  // with max value 1.2 (diffusers' sample_max_value): s = 1.2
  auto capped = torch::tensor({0.5 / 1.2, -1.0, 1.0, 1.0 / 1.2, 0.2, -0.3, 0.1, 0.4}, torch::kFloat64).reshape({2, 2, 2});
  EXPECT_TRUE(same(dynamic_threshold(x0, 0.5, 1.2), capped));
  // not binding (every |x0| <= 1): identity
  auto small = x0.clamp(-1, 1) * 0.9;
  EXPECT_TRUE(torch::equal(dynamic_threshold(small, 0.995), small));
  // float32 too
  EXPECT_TRUE(same(dynamic_threshold(x0.to(torch::kFloat32), 0.5).to(torch::kFloat64), want, 1e-6));

  // As a Denoiser: the sampler sees the thresholded x0 with a consistent eps,
  // and an inner CFG++ renoise eps survives.
  auto p = make_process("vp");
  auto d = std::make_shared<GMMDenoiser>(test_mixture(), p);
  auto cfg = std::make_shared<CFGDenoiser>(d, 6.0);
  DynamicThresholdDenoiser t(cfg, 0.6);
  auto x = points(5, 7, 3.0);
  auto c = labels({0, 1, 0, 1, 1});
  auto in = cfg->predict(x, 0.7, c), out = t.predict(x, 0.7, c);
  EXPECT_GT(in.x0().abs().max().item<double>(), 1.0);  // it binds here
  EXPECT_TRUE(same(out.x0(), dynamic_threshold(in.x0(), 0.6)));
  EXPECT_TRUE(same(out.eps(), (x - out.x0() * p->a(0.7)) / 0.7, 1e-10));
  EXPECT_TRUE(torch::equal(out.renoise_eps(), in.renoise_eps()));
  // no threshold binding on the unguided mixture at low noise: the conditional model
  DynamicThresholdDenoiser loose(d, 0.5, 1.0);
  auto xs = d->predict(x, 0.05, c).x0();
  if (xs.abs().max().item<double>() <= 1.0) EXPECT_TRUE(same(loose.predict(x, 0.05, c).x0(), xs));
  EXPECT_NE(error_of([] { dynamic_threshold(torch::ones({1, 2}), 1.0); }).find("in (0, 1)"), std::string::npos);
  EXPECT_NE(error_of([] { dynamic_threshold(torch::ones({1, 2}), 0.9, 0.5); }).find("max value must be >= 1"),
            std::string::npos);
}

TEST(Guidance, ComposesInTheDocumentedOrder) {
  auto p = make_process("vp");
  auto base = std::make_shared<GMMDenoiser>(test_mixture(), p);
  // neutral options: the base itself
  EXPECT_EQ(make_guidance(base, GuidanceOptions{}).get(), base.get());
  GuidanceOptions g;
  g.cfg = 4;
  g.negative_class = 0;
  g.schedule = CFGSchedule::Cosine;
  g.interval = {0.2, 5.0};
  g.rescale = 0.5;
  g.threshold = 0.5;
  auto guided = make_guidance(base, g);
  auto x = points(6, 5, 2.0);
  auto c = labels({1, 1, 1, 1, 1, 1});
  for (double s : {0.1, 0.6, 2.0, 8.0}) {
    auto xc = base->predict(x, s, c).x0();
    torch::Tensor want;
    if (s > 0.2 && s <= 5.0) {
      // CFG away from class 0 at the scheduled scale, then rescale, then threshold
      auto xn = base->predict(x, s, labels({0, 0, 0, 0, 0, 0})).x0();
      const double w = scheduled_cfg_scale(CFGSchedule::Cosine, 4, *p, s);
      want = dynamic_threshold(cfg_rescale(xn + w * (xc - xn), xc, 0.5), 0.5);
    } else {
      want = dynamic_threshold(xc, 0.5);  // outside the interval: the conditional model, thresholded
    }
    EXPECT_TRUE(same(guided->predict(x, s, c).x0(), want, 1e-10)) << s;
  }
  // the threshold acts last: thresholding before the rescale would differ
  auto xc = base->predict(x, 0.6, c).x0(), xn = base->predict(x, 0.6, labels({0, 0, 0, 0, 0, 0})).x0();
  const double w = scheduled_cfg_scale(CFGSchedule::Cosine, 4, *p, 0.6);
  auto other = cfg_rescale(dynamic_threshold(xn + w * (xc - xn), 0.5), xc, 0.5);
  EXPECT_FALSE(same(guided->predict(x, 0.6, c).x0(), other, 1e-6));
  EXPECT_NE(g.describe().find("negative class 0"), std::string::npos);
  // CADS needs a network
  g.cads = CADSOptions{};
  EXPECT_NE(error_of([&] { make_guidance(base, g); }).find("CADS needs a network model"), std::string::npos);
}

TEST(Guidance, EverySamplerRunsUnderTheComposedRules) {
  auto base = std::make_shared<GMMDenoiser>(test_mixture(), make_process("vp"));
  auto x = points(8, 11, 1.0).to(torch::kFloat32);
  Cond c = labels({0, 1, 0, 1, 0, 1, 0, 1});
  auto levels = make_schedule("karras", base->process(), 6);
  GuidanceOptions none;  // an interval no level reaches: exactly the conditional model
  none.cfg = 3;
  none.interval = {100.0, 200.0};
  GuidanceOptions all;
  all.cfg = 3;
  all.negative_class = 0;
  all.schedule = CFGSchedule::Linear;
  all.interval = {0.05, 10.0};
  all.rescale = 0.7;
  all.threshold = 0.9;
  for (auto& info : samplers()) {
    auto run = [&](DenoiserPtr d) {
      SamplerRun r(*d, levels, c, {}, at::make_generator<at::CPUGeneratorImpl>(9));
      return run_sampler(info, r, x * levels[0]);
    };
    EXPECT_TRUE(torch::equal(run(make_guidance(base, none)), run(base))) << info.name;
    auto out = run(make_guidance(base, all));
    EXPECT_TRUE(torch::isfinite(out).all().item<bool>()) << info.name;
    EXPECT_FALSE(torch::allclose(out, run(base), 1e-3, 1e-3)) << info.name;  // the rules act
  }
}

// A tiny class-conditional network with random weights in every layer.
std::shared_ptr<NetDenoiser> tiny_net(const std::string& arch) {
  const char* cfg = arch == "unet"
                        ? R"({"in_channels":1,"image_size":8,"model_channels":8,"channel_mult":[1,2],"num_res_blocks":1,
                              "attention_resolutions":[2],"num_heads":2,"norm_groups":4,"num_classes":3})"
                        : R"({"in_channels":1,"image_size":8,"patch_size":4,"hidden_size":16,"depth":1,"num_heads":2,
                              "num_classes":3})";
  auto net = make_network(arch, cfg);
  torch::NoGradGuard ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(2);
  for (auto& p : net->parameters()) p.copy_(at::randn(p.sizes(), gen, p.options()) * 0.1);
  net->eval();
  return std::make_shared<NetDenoiser>(net, make_process("vp"), Parameterization{PredKind::Eps});
}

TEST(Guidance, CADSScheduleAndNoiseFormula) {
  EXPECT_EQ(cads_gamma(0.3, 0.6, 0.9), 1.0);
  EXPECT_EQ(cads_gamma(0.6, 0.6, 0.9), 1.0);
  EXPECT_NEAR(cads_gamma(0.7, 0.6, 0.9), 2.0 / 3, 1e-15);
  EXPECT_EQ(cads_gamma(0.9, 0.6, 0.9), 0.0);
  EXPECT_EQ(cads_gamma(1.0, 0.6, 0.9), 0.0);
  auto y = torch::tensor({1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 1.0, 5.0}, torch::kFloat64).reshape({2, 4});
  auto n = torch::tensor({0.5, -1.0, 0.0, 2.0, 1.0, 1.0, -2.0, 0.0}, torch::kFloat64).reshape({2, 4});
  auto hat = y * std::sqrt(0.36) + n * (0.5 * std::sqrt(0.64));
  EXPECT_TRUE(same(cads_noise_condition(y, n, 0.36, 0.5, 0.0), hat));
  // psi = 1 restores each row's mean and std; psi mixes linearly
  auto r = cads_noise_condition(y, n, 0.36, 0.5, 1.0);
  EXPECT_TRUE(same(r.mean(1), y.mean(1)));
  EXPECT_TRUE(same(r.std(1), y.std(1)));
  EXPECT_TRUE(same(cads_noise_condition(y, n, 0.36, 0.5, 0.3), 0.3 * r + 0.7 * hat));
  EXPECT_TRUE(same(cads_noise_condition(y, n, 1.0, 0.5, 1.0), y));
  EXPECT_NE(error_of([] { CADSOptions{0.9, 0.6}.validate(); }).find("tau1 < tau2"), std::string::npos);
  EXPECT_NE(error_of([] { CADSOptions{0.1, 0.6, 0.0}.validate(); }).find("noise scale must be positive"),
            std::string::npos);
}

TEST(Guidance, CADSNoisesTheClassEmbeddingOfRealClassesOnly) {
  torch::NoGradGuard ng;
  for (std::string arch : {"unet", "dit"}) {
    auto net = tiny_net(arch);
    const Process& p = net->process();
    CADSOptions o{0.2, 0.7, 0.5, 0.5};
    auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
    auto x = at::randn({3, 1, 8, 8}, gen, torch::kFloat32) * 2;
    auto c = labels({2, -1, 0});
    const double s_noisy = p.s_of(p.t_of(p.s_min()) + 0.5 * (p.t_of(p.s_max()) - p.t_of(p.s_min())));
    ASSERT_NEAR(normalized_time(p, s_noisy), 0.5, 1e-6);
    const double gamma = cads_gamma(normalized_time(p, s_noisy), 0.2, 0.7);
    const double s_clean = p.s_of(p.t_of(p.s_min()) + 0.1 * (p.t_of(p.s_max()) - p.t_of(p.s_min())));

    CADSDenoiser cads(net, o, 7);
    // gamma = 1 (tau <= tau1) and null-class-only batches: the plain network, bit for bit
    EXPECT_TRUE(torch::equal(cads.predict(x, s_clean, c).x0(), net->predict(x, s_clean, c).x0())) << arch;
    EXPECT_TRUE(torch::equal(cads.predict(x, s_noisy, labels({-1, -1, -1})).x0(),
                             net->predict(x, s_noisy, labels({-1, -1, -1})).x0()))
        << arch;
    // otherwise: the network with the noised class embedding on rows 0 and 2, the noise from the seed
    CADSDenoiser fresh(net, o, 7);
    auto got = fresh.predict(x, s_noisy, c).x0();
    Hooks h;
    auto g7 = at::make_generator<at::CPUGeneratorImpl>(7);
    int fired = 0;
    h.add("label_emb", [&](const std::string&, const torch::Tensor& y, const HookContext&) {
      ++fired;
      auto rows = torch::tensor({0, 2}, torch::kInt64);
      auto noise = at::randn({2, y.size(1)}, g7, torch::kFloat32);
      return y.index_copy(0, rows, cads_noise_condition(y.index_select(0, rows), noise, gamma, 0.5, 0.5));
    });
    net->network().set_hooks(&h);
    auto want = net->predict(x, s_noisy, c).x0();
    net->network().set_hooks(nullptr);
    EXPECT_EQ(fired, 1);
    EXPECT_TRUE(torch::equal(got, want)) << arch;
    EXPECT_FALSE(torch::allclose(got, net->predict(x, s_noisy, c).x0())) << arch;
    // the null-class row is untouched
    EXPECT_TRUE(torch::equal(got[1], net->predict(x, s_noisy, c).x0()[1])) << arch;
    // the network's own hooks are back in place and still run during the call
    int observed = 0;
    Hooks mine;
    mine.add("temb", [&](const std::string&, const torch::Tensor& v, const HookContext&) { ++observed; return v; });
    net->network().set_hooks(&mine);
    CADSDenoiser(net, o, 7).predict(x, s_noisy, c);
    EXPECT_EQ(observed, 1);
    EXPECT_EQ(net->network().hooks(), &mine);
    net->network().set_hooks(nullptr);
    // same seed, same answer
    EXPECT_TRUE(torch::equal(CADSDenoiser(net, o, 7).predict(x, s_noisy, c).x0(), got));

    // Under CFG the null branch is the plain network and the conditional
    // branch draws exactly what a conditional-only call draws.
    GuidanceOptions g;
    g.cfg = 3;
    g.cads = o;
    g.cads_seed = 7;
    auto cc = labels({2, 1, 0});
    auto guided = make_guidance(net, g)->predict(x, s_noisy, cc).x0();
    auto xc = CADSDenoiser(net, o, 7).predict(x, s_noisy, cc).x0();
    auto xu = net->predict(x, s_noisy, cc.null_like()).x0();
    EXPECT_TRUE(torch::allclose(guided, xu + 3 * (xc - xu), 1e-5, 1e-5)) << arch;
  }
}

}  // namespace
