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
#include "cli_testing.h"
#include "tweedie/guide/apg.h"
#include "tweedie/guide/autoguidance.h"
#include "tweedie/guide/cfg_zero_star.h"
#include "tweedie/guide/tcfg.h"
#include "tweedie/io/npy.h"
#include "tweedie/guide/cads.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/guide/cfg_rescale.h"
#include "tweedie/guide/cfg_schedule.h"
#include "tweedie/guide/dynamic_threshold.h"
#include "tweedie/guide/guidance.h"
#include "tweedie/guide/guidance_rule.h"
#include "tweedie/guide/guidance_interval.h"
#include "tweedie/guide/classifier_guidance.h"
#include "tweedie/guide/loss_guidance.h"
#include "tweedie/guide/pag.h"
#include "tweedie/guide/sag.h"
#include "tweedie/guide/seg.h"
#include "tweedie/models/classifier.h"
#include "tweedie/models/network_io.h"
#include "tweedie/sample/generate.h"
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
  g.set("cfg", 3.0);
  g.set("guidance-interval", "0.5,2");
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
  g.set("guidance-interval", "0,inf");
  EXPECT_TRUE(torch::equal(make_guidance(base, g)->predict(x, 0.3, c).x0(), cfg.predict(x, 0.3, c).x0()));
  // over a whole run: 2N rows exactly at the levels inside the interval
  g.set("guidance-interval", "0.3,3");
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
    g.set("cfg", 3.0);
    g.set("cfg-schedule", to_string(k));
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
  g.set("cfg", 3.0);
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

namespace {
// A new rule written without any knowledge of CFG++: it rebuilds the
// prediction from x0 (dropping everything else), as a rule author would.
class HalveX0 : public GuidanceRule {
 public:
  explicit HalveX0(DenoiserPtr inner, bool own_aux = false) : GuidanceRule(std::move(inner)), own_(own_aux) {}

 private:
  Prediction guide(const torch::Tensor& x, double s, const Cond& c) override {
    Prediction p = inner(x, s, c);
    Prediction out = Prediction::from_x0(p.x0() * 0.5, x, s, process());
    if (own_) out.set_renoise_eps(torch::zeros_like(x));
    return out;
  }
  bool own_;
};
// Calls its inner model on a doubled batch (whose fields cannot be carried).
class Doubled : public GuidanceRule {
 public:
  using GuidanceRule::GuidanceRule;

 private:
  Prediction guide(const torch::Tensor& x, double s, const Cond& c) override {
    Prediction p = inner(torch::cat({x, x}), s, c.concat(c));
    return Prediction::from_x0(p.x0().narrow(0, 0, x.size(0)), x, s, process());
  }
};
}  // namespace

TEST(GuidanceRule, CarriesTheInnerRenoiseEpsUnlessTheRuleSetsItsOwn) {
  auto p = make_process("vp");
  auto d = std::make_shared<GMMDenoiser>(test_mixture(), p);
  auto cfg = std::make_shared<CFGDenoiser>(d, 4.0);
  auto x = points(5, 11, 2.0);
  auto c = labels({0, 1, 0, 1, 1});
  const Prediction in = cfg->predict(x, 0.8, c);
  ASSERT_FALSE(torch::equal(in.renoise_eps(), in.eps()));  // CFG++'s field is set
  // carried through a rule that never mentions it, and through two of them
  const Prediction out = HalveX0(cfg).predict(x, 0.8, c);
  EXPECT_TRUE(same(out.x0(), in.x0() * 0.5));
  EXPECT_TRUE(torch::equal(out.renoise_eps(), in.renoise_eps()));
  EXPECT_TRUE(torch::equal(HalveX0(std::make_shared<HalveX0>(cfg)).predict(x, 0.8, c).renoise_eps(), in.renoise_eps()));
  // a rule's own field wins
  EXPECT_TRUE(torch::equal(HalveX0(cfg, true).predict(x, 0.8, c).renoise_eps(), torch::zeros_like(x)));
  // nothing to carry: renoise_eps() is the prediction's own eps
  const Prediction plain = HalveX0(d).predict(x, 0.8, c);
  EXPECT_TRUE(plain.renoise_eps().is_same(plain.eps()));
  // a field of another batch shape is not taken
  const Prediction dbl = Doubled(cfg).predict(x, 0.8, c);
  EXPECT_TRUE(dbl.renoise_eps().is_same(dbl.eps()));
}

TEST(Guidance, ComposesInTheDocumentedOrder) {
  auto p = make_process("vp");
  auto base = std::make_shared<GMMDenoiser>(test_mixture(), p);
  // neutral options: the base itself
  EXPECT_EQ(make_guidance(base, GuidanceOptions{}).get(), base.get());
  GuidanceOptions g;
  g.set("cfg", 4.0);
  g.set("negative-class", "0");
  g.set("cfg-schedule", "cosine");
  g.set("guidance-interval", "0.2,5");
  g.set("cfg-rescale", 0.5);
  g.set("dynamic-threshold", 0.5);
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
  g.set("cads-noise", 0.25);
  EXPECT_NE(error_of([&] { make_guidance(base, g); }).find("--cads-noise needs a network model"), std::string::npos);
}

TEST(Guidance, EverySamplerRunsUnderTheComposedRules) {
  auto base = std::make_shared<GMMDenoiser>(test_mixture(), make_process("vp"));
  auto x = points(8, 11, 1.0).to(torch::kFloat32);
  Cond c = labels({0, 1, 0, 1, 0, 1, 0, 1});
  auto levels = make_schedule("karras", base->process(), 6);
  GuidanceOptions none;  // an interval no level reaches: exactly the conditional model
  none.set("cfg", 3.0);
  none.set("guidance-interval", "100,200");
  GuidanceOptions all;
  all.set("cfg", 3.0);
  all.set("negative-class", "0");
  all.set("cfg-schedule", "linear");
  all.set("guidance-interval", "0.05,10");
  all.set("cfg-rescale", 0.7);
  all.set("dynamic-threshold", 0.9);
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
    Hooks& h = net->network().hooks();
    auto g7 = at::make_generator<at::CPUGeneratorImpl>(7);
    int fired = 0;
    h.add("label_emb", [&](const std::string&, const torch::Tensor& y, const HookContext&) {
      ++fired;
      auto rows = torch::tensor({0, 2}, torch::kInt64);
      auto noise = at::randn({2, y.size(1)}, g7, torch::kFloat32);
      return y.index_copy(0, rows, cads_noise_condition(y.index_select(0, rows), noise, gamma, 0.5, 0.5));
    });
    auto want = net->predict(x, s_noisy, c).x0();
    h.clear();
    EXPECT_EQ(fired, 1);
    EXPECT_TRUE(torch::equal(got, want)) << arch;
    EXPECT_FALSE(torch::allclose(got, net->predict(x, s_noisy, c).x0())) << arch;
    // the null-class row is untouched
    EXPECT_TRUE(torch::equal(got[1], net->predict(x, s_noisy, c).x0()[1])) << arch;
    // the network's own hooks are back in place and still run during the call
    int observed = 0;
    Hooks& mine = net->network().hooks();
    mine.add("temb", [&](const std::string&, const torch::Tensor& v, const HookContext&) { ++observed; return v; });
    CADSDenoiser(net, o, 7).predict(x, s_noisy, c);
    EXPECT_EQ(observed, 1);
    EXPECT_EQ(mine.size(), 1u);  // CADS's own hook is gone again
    mine.clear();
    // same seed, same answer
    EXPECT_TRUE(torch::equal(CADSDenoiser(net, o, 7).predict(x, s_noisy, c).x0(), got));

    // Under CFG the null branch is the plain network and the conditional
    // branch draws exactly what a conditional-only call draws.
    GuidanceOptions g(3);
    g.set("cads-noise", o.noise_scale).set("cads-tau", std::to_string(o.tau1) + "," + std::to_string(o.tau2));
    g.set("cads-psi", o.psi);
    g.seed = 7;
    auto cc = labels({2, 1, 0});
    auto guided = make_guidance(net, g)->predict(x, s_noisy, cc).x0();
    auto xc = CADSDenoiser(net, o, 7).predict(x, s_noisy, cc).x0();
    auto xu = net->predict(x, s_noisy, cc.null_like()).x0();
    EXPECT_TRUE(torch::allclose(guided, xu + 3 * (xc - xu), 1e-5, 1e-5)) << arch;
  }
}

// ---- the guidance registry ----

TEST(GuidanceRegistry, RulesDeclareTheirPlaceOptionsAndNeeds) {
  std::vector<std::string> order;
  std::set<std::string> flags;
  for (const GuidanceRuleInfo* r : guidance_rules()) {
    order.push_back(r->name);
    ASSERT_FALSE(r->options.empty()) << r->name;
    EXPECT_TRUE(r->build != nullptr && r->describe != nullptr) << r->name;
    EXPECT_FALSE(r->reference.empty()) << r->name;
    for (const MethodOption& o : r->options) {
      EXPECT_TRUE(flags.insert(o.name).second) << "two rules declare --" << o.name;
      EXPECT_FALSE(o.help.empty()) << o.name;
      EXPECT_EQ(guidance_rule_of(o.name), r) << o.name;
    }
  }
  EXPECT_EQ(order, (std::vector<std::string>{"attend-excite", "layout", "freeu", "cads", "sag", "autoguidance", "apg", "cfg", "cfg-zero-star", "fdg", "instruct-pix2pix",
                                             "pag", "seg", "sega", "slg", "tcfg", "loss-guidance", "classifier-guidance", "dynamic-threshold"}));
  EXPECT_EQ(guidance_rule_of("negative")->name, "cfg");  // an attachment
  EXPECT_EQ(guidance_rule_of("nowhere"), nullptr);
}

TEST(GuidanceRegistry, ValuesAreCheckedWhereTheRuleDeclaresThem) {
  auto base = std::make_shared<GMMDenoiser>(test_mixture(), make_process("vp"));
  GuidanceOptions g(3);
  EXPECT_EQ(error_of([&] { g.set("cfg-rescal", 0.5); }), "unknown guidance option --cfg-rescal");
  EXPECT_EQ(error_of([&] { g.set("cfg-rescale", 2.0); }), "--cfg-rescale must be in [0, 1] (got 2)");
  EXPECT_EQ(error_of([&] { g.set("cfg-rescale", "x"); }), "--cfg-rescale expects a number, got 'x'");
  EXPECT_EQ(error_of([&] { g.set("cfg-schedule", 1.0); }), "--cfg-schedule takes a word, not the number 1");
  EXPECT_EQ(error_of([&] { g.set("negative", 1.0); }), "--negative takes an object (attach it), not a value");
  EXPECT_EQ(error_of([&] { g.set("loss-factor", 1.5); }), "--loss-factor must be an integer >= 1 (got 1.5)");
  g.set("dynamic-threshold", 0.9).set("dynamic-threshold-max", "inf");
  EXPECT_EQ(g.number("dynamic-threshold-max"), INFINITY);
  EXPECT_EQ(g.number("cads-psi"), 1.0);  // unset: the declared default
  EXPECT_EQ(g.text("cads-tau"), "0.6,0.9");
  // an option without its rule's switch
  GuidanceOptions sites;
  sites.set("pag-sites", "mid.attn.0");
  EXPECT_EQ(error_of([&] { make_guidance(base, sites); }), "--pag-sites needs --pag");
  GuidanceOptions rescale;
  rescale.set("cfg-rescale", 0.5);
  EXPECT_EQ(error_of([&] { make_guidance(base, rescale); }),
            "--cfg-rescale has no effect without guidance: give --cfg other than 1");
  // conditional samples
  GuidanceOptions neg(3);
  neg.set("negative-class", "2");
  neg.conditional = false;
  neg.condition_from = "--class";
  EXPECT_EQ(error_of([&] { make_guidance(base, neg); }), "--negative-class needs --class");
  // words a rule reads
  GuidanceOptions words(3);
  words.set("cfg-schedule", "quadratic");
  EXPECT_EQ(error_of([&] { make_guidance(base, words); }),
            "--cfg-schedule: unknown schedule 'quadratic' (constant, linear, cosine)");
  words.set("cfg-schedule", "linear").set("guidance-interval", "5,1");
  EXPECT_EQ(error_of([&] { make_guidance(base, words); }), "--guidance-interval: LO must be below HI (got 5,1)");
  words.set("guidance-interval", "0.5,inf");
  EXPECT_NE(make_guidance(base, words).get(), base.get());
  // a negative class read by the library as an index (the CLI resolves names)
  GuidanceOptions bad(3);
  bad.set("negative-class", "tshirt");
  EXPECT_EQ(error_of([&] { make_guidance(base, bad); }), "--negative-class: 'tshirt' is not a class index");
  // an object of the wrong type
  GuidanceOptions ag;
  ag.set("autoguidance", 2.0).attach("guide-model", 3);
  EXPECT_EQ(error_of([&] { make_guidance(base, ag); }), "--guide-model: the attached object has the wrong type");
}

// ---- CFG variants: APG, CFG-Zero* ----

double row_norm_max(const torch::Tensor& t) { return t.flatten(1).norm(2, 1).max().item<double>(); }

TEST(APG, ReducesToCFGAndProjectsAndClipsTheUpdate) {
  auto d = std::make_shared<GMMDenoiser>(test_mixture(), make_process("vp"));
  auto x = points(6);
  auto c = labels({0, 1, 1, 0, 1, 0});
  const double s = 0.8;
  CFGOptions cfg;
  cfg.scale = 4;
  auto plain = CFGDenoiser(d, cfg).predict(x, s, c).x0();
  EXPECT_TRUE(same(APGDenoiser(d, cfg, {1.0, 0, 0}).predict(x, s, c).x0(), plain));
  // eta = 0: the update (x0 - x0_cond) / (w - 1) is orthogonal to x0_cond, row by row
  auto xc = d->predict(x, s, c).x0(), xu = d->predict(x, s, c.null_like()).x0();
  auto upd = (APGDenoiser(d, cfg, {0.0, 0, 0}).predict(x, s, c).x0() - xc) / 3;
  EXPECT_LT((upd * xc).sum(1).abs().max().item<double>(), 1e-12);
  EXPECT_GT(row_norm_max(upd), 1e-3);
  // ... and upd + its parallel part is CFG's update
  auto u = xc / xc.norm(2, 1, true);
  auto par = ((xc - xu) * u).sum(1, true) * u;
  EXPECT_TRUE(same(upd + par, xc - xu));
  // the clipped update's norm is r where CFG's is larger
  const double r = 0.5 * row_norm_max(xc - xu);
  auto clipped = (APGDenoiser(d, cfg, {1.0, 0, r}).predict(x, s, c).x0() - xc) / 3;
  auto want = (xc - xu) * torch::clamp_max(r / (xc - xu).norm(2, 1, true), 1.0);
  EXPECT_TRUE(same(clipped, want));
  EXPECT_NEAR(row_norm_max(clipped), r, 1e-12);
  // momentum: d_1 = d(s1) + beta d(s0) within a run, restarting with the next run
  APGDenoiser m(d, cfg, {1.0, -0.5, 0});
  const double s1 = 0.5;
  auto d0 = xc - xu;
  auto d1 = d->predict(x, s1, c).x0() - d->predict(x, s1, c.null_like()).x0();
  torch::Tensor first, second, again;
  {
    StepScope st(0);
    first = m.predict(x, s, c).x0();
  }
  {
    StepScope st(1);
    second = m.predict(x, s1, c).x0();
  }
  {
    StepScope st(0);
    again = m.predict(x, s, c).x0();
  }
  EXPECT_TRUE(same(first, plain));
  EXPECT_TRUE(same(second, d->predict(x, s1, c).x0() + 3 * (d1 - 0.5 * d0), 1e-10));
  EXPECT_TRUE(same(again, plain));
  // through the registry: the same rule, and one CFG replacement at a time
  GuidanceOptions g(4);
  g.set("apg", 1.0);
  EXPECT_TRUE(same(make_guidance(d, g)->predict(x, s, c).x0(), plain));
  EXPECT_EQ(g.describe(), "cfg 4, APG eta 1");
  g.set("cfg-zero-star", 0);
  EXPECT_EQ(error_of([&] { make_guidance(d, g); }), "--apg and --cfg-zero-star both replace cfg; give one");
  GuidanceOptions off;
  off.set("apg", 0.0);
  EXPECT_EQ(error_of([&] { make_guidance(d, off); }), "--apg needs guidance: give --cfg other than 1");
}

TEST(CFGZeroStar, MatchesItsFormulaInVelocityOrEpsForm) {
  auto x = points(5);
  auto c = labels({0, 1, 1, 0, 1});
  // s* by hand: a multiple of u gives the multiple; an orthogonal one gives 0
  auto u = torch::tensor({{1.0, 2.0}, {3.0, 0.0}}, torch::kFloat64);
  auto v = torch::tensor({{2.0, 4.0}, {0.0, 5.0}}, torch::kFloat64);
  EXPECT_TRUE(same(cfg_zero_star_scale(v, u), torch::tensor({2.0, 0.0}, torch::kFloat64)));
  for (const char* name : {"flow", "vp"}) {
    auto d = std::make_shared<GMMDenoiser>(test_mixture(), make_process(name));
    const Process& p = d->process();
    const double s = std::string(name) == "flow" ? 0.6 : 0.8;
    const PredKind k = std::string(name) == "flow" ? PredKind::Velocity : PredKind::Eps;
    CFGOptions cfg;
    cfg.scale = 3;
    auto pc = d->predict(x, s, c).as({k}), pu = d->predict(x, s, c.null_like()).as({k});
    auto st = ((pc * pu).sum(1) / (pu * pu).sum(1)).unsqueeze(1);
    auto want = Prediction({k}, pu * st + 3 * (pc - pu * st), x, s, p).x0();
    EXPECT_TRUE(same(CFGZeroStarDenoiser(d, cfg, 0).predict(x, s, c).x0(), want, 1e-10)) << name;
    EXPECT_FALSE(same(want, CFGDenoiser(d, cfg).predict(x, s, c).x0(), 1e-6)) << name;
    // where s* = 1 (the unconditional branch is its own projection) it is CFG:
    // here with the conditional branch as its own negative
    CFGOptions self = cfg;
    self.negative = [](const Cond& cc) { return cc; };
    EXPECT_TRUE(same(CFGZeroStarDenoiser(d, self, 0).predict(x, s, c).x0(), d->predict(x, s, c).x0(), 1e-10)) << name;
    // w = 1: the conditional model
    EXPECT_TRUE(same(CFGZeroStarDenoiser(d, CFGOptions{1.0}, 0).predict(x, s, c).x0(), d->predict(x, s, c).x0()));
  }
  // zero-init on flow: the first K steps of a run keep the state (velocity 0)
  auto d = std::make_shared<GMMDenoiser>(test_mixture(), make_process("flow"));
  CFGOptions cfg;
  cfg.scale = 3;
  CFGZeroStarDenoiser z(d, cfg, 2);
  for (int step : {0, 1, 2}) {
    StepScope st(step);
    Prediction pr = z.predict(x, 0.6, c);
    if (step < 2) {
      EXPECT_TRUE(same(pr.x0(), x)) << step;
      EXPECT_LT(pr.velocity().abs().max().item<double>(), 1e-12);
    } else {
      EXPECT_TRUE(same(pr.x0(), CFGZeroStarDenoiser(d, cfg, 0).predict(x, 0.6, c).x0(), 1e-12));
    }
  }
  auto vp = std::make_shared<GMMDenoiser>(test_mixture(), make_process("vp"));
  EXPECT_NE(error_of([&] { CFGZeroStarDenoiser(vp, cfg, 1); }).find("zero-init (1 steps) is for flow processes"),
            std::string::npos);
  GuidanceOptions g(3);
  g.set("cfg-zero-star", 0);
  EXPECT_TRUE(same(make_guidance(d, g)->predict(x, 0.6, c).x0(), CFGZeroStarDenoiser(d, cfg, 0).predict(x, 0.6, c).x0()));
}

TEST(TCFG, DampsTheTangentialPartOfTheUnconditionalEps) {
  // The top right singular vector of M = [u; c] by hand: the top eigenvector
  // (a, b) of the 2 x 2 Gram matrix G = M M^T, v1 = (a u + b c) / |a u + b c|.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(12);
  auto c = at::randn({3, 5}, gen, torch::kFloat64), u = at::randn({3, 5}, gen, torch::kFloat64);
  auto damped = tangential_damping(c, u, 1.0), half = tangential_damping(c, u, 0.5);
  for (int64_t i = 0; i < 3; ++i) {
    const double guu = (u[i] * u[i]).sum().item<double>(), gcc = (c[i] * c[i]).sum().item<double>(),
                 guc = (u[i] * c[i]).sum().item<double>();
    const double l1 = 0.5 * (guu + gcc) + std::sqrt(0.25 * (guu - gcc) * (guu - gcc) + guc * guc);
    auto v = u[i] * guc + c[i] * (l1 - guu);  // G (a, b) = l1 (a, b) with (a, b) = (guc, l1 - guu)
    v = v / v.norm();
    auto want = (u[i] * v).sum() * v;
    EXPECT_TRUE(same(damped[i], want, 1e-10)) << i;
    EXPECT_TRUE(same(half[i], (u[i] + want) / 2, 1e-10)) << i;
  }
  EXPECT_TRUE(same(tangential_damping(c, u, 0.0), u));
  EXPECT_TRUE(same(tangential_damping(c, c * -2.0, 1.0), c * -2.0, 1e-10));  // parallel: nothing to damp
  // as a rule: d = 0 is CFG; d = 1 differs
  auto d = std::make_shared<GMMDenoiser>(test_mixture(), make_process("vp"));
  auto x = points(4);
  auto cond = labels({0, 1, 1, 0});
  CFGOptions cfg;
  cfg.scale = 3;
  auto plain = CFGDenoiser(d, cfg).predict(x, 0.8, cond).x0();
  EXPECT_TRUE(same(TCFGDenoiser(d, cfg, 0.0).predict(x, 0.8, cond).x0(), plain, 1e-10));
  auto ec = d->predict(x, 0.8, cond).eps(), eu = d->predict(x, 0.8, cond.null_like()).eps();
  auto eu1 = tangential_damping(ec, eu, 1.0);
  auto want = Prediction({PredKind::Eps}, eu1 + 3 * (ec - eu1), x, 0.8, d->process()).x0();
  EXPECT_TRUE(same(TCFGDenoiser(d, cfg, 1.0).predict(x, 0.8, cond).x0(), want, 1e-10));
  EXPECT_FALSE(same(want, plain, 1e-6));
  GuidanceOptions g(3);
  g.set("tcfg", 1.0);
  EXPECT_TRUE(same(make_guidance(d, g)->predict(x, 0.8, cond).x0(), want, 1e-10));
}

// ---- Hooks: ids and scoped hooks ----

TEST(Hooks, IdsRemoveExactlyTheirHookAndScopedHooksCleanUpInAnyOrder) {
  Hooks h;
  std::vector<int> seen;
  auto mark = [&](int k) {
    return [&seen, k](const std::string&, const torch::Tensor& v, const HookContext&) {
      seen.push_back(k);
      return v + 1;
    };
  };
  const HookId a = h.add("x", mark(1)), b = h.add("*", mark(2));
  EXPECT_NE(a, b);
  EXPECT_EQ(h.apply("x", torch::zeros({1})).item<float>(), 2.f);
  h.remove(a);
  h.remove(a);  // gone already: no-op
  EXPECT_EQ(h.size(), 1u);
  EXPECT_EQ(h.apply("x", torch::zeros({1})).item<float>(), 1.f);
  EXPECT_EQ(seen, (std::vector<int>{1, 2, 2}));

  // A network owns its hooks; scoped ones leave in any order, and the
  // user's own hooks stay.
  auto net = tiny_net("unet");
  Network& n = net->network();
  Hooks& mine = n.hooks();
  ASSERT_TRUE(mine.empty());
  mine.add("temb", mark(5));
  auto one = std::make_unique<ScopedHook>(n.hooks(), "temb", mark(3));
  auto two = std::make_unique<ScopedHook>(n.hooks(), "temb", mark(4));
  EXPECT_EQ(mine.size(), 3u);
  seen.clear();
  EXPECT_EQ(mine.apply("temb", torch::zeros({1})).item<float>(), 3.f);
  EXPECT_EQ(seen, (std::vector<int>{5, 3, 4}));  // in the order added
  one.reset();  // not the last one created
  EXPECT_EQ(mine.size(), 2u);
  seen.clear();
  mine.apply("temb", torch::zeros({1}));
  EXPECT_EQ(seen, (std::vector<int>{5, 4}));
  two.reset();
  EXPECT_EQ(mine.size(), 1u);
  mine.clear();
}

// ---- PAG ----

std::shared_ptr<NetDenoiser> tiny_dit() { return tiny_net("dit"); }

// tiny_net with attention that matters: q/k/v and output projections scaled
// up, so attention maps are far from uniform and the branch is not negligible.
std::shared_ptr<NetDenoiser> attentive_net(const std::string& arch) {
  auto net = tiny_net(arch);
  torch::NoGradGuard ng;
  for (auto& p : net->network().named_parameters())
    if (p.key().find("attn") != std::string::npos) p.value().mul_(p.key().find("qkv") != std::string::npos ? 8 : 4);
  return net;
}

// The network with identity attention at `site` on every row.
torch::Tensor perturbed_x0(const std::shared_ptr<NetDenoiser>& net, const std::string& site, const torch::Tensor& x,
                           double s, const Cond& c) {
  Hooks& h = net->network().hooks();
  h.add(site + ".probs", [&](const std::string&, const torch::Tensor& p, const HookContext&) {
    return identity_attention_rows(p, x.size(0), 0);
  });
  auto out = net->predict(x, s, c).x0();
  h.clear();
  return out;
}

TEST(PAG, IdentityAttentionMakesTheSiteIgnoreQueriesAndKeys) {
  torch::NoGradGuard ng;
  auto net = attentive_net("unet");
  const std::string site = middle_attention_site(net->network());
  EXPECT_EQ(site, "mid.attn.0");
  EXPECT_EQ(middle_attention_site(tiny_dit()->network()), "blocks.0.attn");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto x = at::randn({2, 1, 8, 8}, gen, torch::kFloat32);
  auto c = labels({0, 2});
  // scramble the queries and keys of the site: the identity-attention output must not move
  auto run = [&](bool identity, bool scramble) {
    Hooks& h = net->network().hooks();
    if (scramble)
      for (const char* w : {".q", ".k"})
        h.add(site + w, [](const std::string&, const torch::Tensor& v, const HookContext&) { return v.flip(2) * 3; });
    if (identity)
      h.add(site + ".probs", [&](const std::string&, const torch::Tensor& p, const HookContext&) {
        return identity_attention_rows(p, 2, 0);
      });
    auto out = net->predict(x, 0.8, c).x0();
    h.clear();
    return out;
  };
  EXPECT_TRUE(torch::equal(run(true, false), run(true, true)));
  EXPECT_GT((run(false, false) - run(false, true)).abs().max().item<double>(), 1e-4);
  // identity_attention_rows leaves the first rows alone
  auto p = torch::softmax(torch::randn({6, 4, 4}), -1);
  auto q = identity_attention_rows(p, 3, 2);  // 2 heads; batch rows 0, 1 kept
  EXPECT_TRUE(torch::equal(q.narrow(0, 0, 4), p.narrow(0, 0, 4)));
  EXPECT_TRUE(torch::equal(q[4], torch::eye(4)));
  EXPECT_TRUE(torch::equal(q[5], torch::eye(4)));
}

TEST(PAG, GuidedPredictionIsTheFormulaWithAndWithoutCFGInOneCall) {
  torch::NoGradGuard ng;
  for (std::string arch : {"unet", "dit"}) {
    auto net = attentive_net(arch);
    const std::string site = middle_attention_site(net->network());
    auto gen = at::make_generator<at::CPUGeneratorImpl>(6);
    auto x = at::randn({3, 1, 8, 8}, gen, torch::kFloat32);
    auto c = labels({0, 1, 2});
    const double s = 0.7;
    auto xc = net->predict(x, s, c).x0(), xu = net->predict(x, s, c.null_like()).x0();
    auto xp = perturbed_x0(net, site, x, s, c);
    EXPECT_GT((xp - xc).abs().max().item<double>(), 1e-4) << arch;
    auto counted = std::make_shared<Counting>(net);
    PAGDenoiser pag(counted, net, {2.0});
    EXPECT_TRUE(torch::allclose(pag.predict(x, s, c).x0(), xc + 2 * (xc - xp), 1e-5, 1e-5)) << arch;
    CFGOptions cfg;
    cfg.scale = 3;
    PAGDenoiser both(counted, net, {2.0}, cfg);
    Prediction g = both.predict(x, s, c);
    EXPECT_TRUE(torch::allclose(g.x0(), xu + 3 * (xc - xu) + 2 * (xc - xp), 1e-5, 1e-5)) << arch;
    EXPECT_EQ(counted->rows, (std::vector<int64_t>{6, 9})) << arch;  // [c; c_pert], then [c; null; c_pert]
    EXPECT_TRUE(torch::allclose(g.renoise_eps(), net->predict(x, s, c.null_like()).eps(), 1e-5, 1e-5)) << arch;
    // make_guidance builds the same rule, and the network's hooks are left as they were
    GuidanceOptions o;
    o.set("cfg", 3.0);
    o.set("pag", 2.0);
    EXPECT_TRUE(torch::allclose(make_guidance(net, o)->predict(x, s, c).x0(), g.x0(), 1e-6, 1e-6)) << arch;
    EXPECT_TRUE(net->network().hooks().empty());
    o.set("pag-sites", "nowhere.attn");
    EXPECT_NE(error_of([&] { make_guidance(net, o)->predict(x, s, c); }).find("no self-attention at 'nowhere.attn'"),
              std::string::npos);
    EXPECT_TRUE(net->network().hooks().empty());
  }
  // a network-free model is refused
  GuidanceOptions o;
  o.set("pag", 1.0);
  auto gmm = std::make_shared<GMMDenoiser>(test_mixture(), make_process("vp"));
  EXPECT_NE(error_of([&] { make_guidance(gmm, o); }).find("--pag needs a network model"), std::string::npos);
}

// ---- SEG ----

TEST(SEG, QueryBlurKeepsTheOtherRowsAndInfiniteBlurIsTheMeanQuery) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  auto q = at::randn({3, 2, 16, 4}, gen, torch::kFloat64);  // 4 x 4 token grid of an 8 x 8 image
  auto mean = blur_queries(q, 3, 1, INFINITY, 8, 8);
  EXPECT_TRUE(torch::equal(mean[0], q[0]));
  for (int64_t b : {1, 2})
    EXPECT_TRUE(same(mean[b], q[b].mean(1, true).expand_as(q[b]))) << b;
  // a finite blur: the grid's Gaussian blur (sag.h) of the perturbed rows only; constants are fixed points
  auto one = blur_queries(q, 3, 2, 1.0, 8, 8);
  EXPECT_TRUE(torch::equal(one.narrow(0, 0, 2), q.narrow(0, 0, 2)));
  auto grid = q[2].permute({0, 2, 1}).reshape({1, 8, 4, 4});
  auto want = gaussian_blur(grid, 7, 1.0).reshape({2, 4, 16}).permute({0, 2, 1});
  EXPECT_TRUE(same(one[2], want));
  auto flat = torch::ones({2, 2, 16, 4}, torch::kFloat64) * 3;
  EXPECT_TRUE(same(blur_queries(flat, 2, 0, 0.8, 8, 8), flat));
  EXPECT_NE(error_of([&] { blur_queries(q, 3, 0, 1.0, 8, 6); }).find("do not tile"), std::string::npos);
}

TEST(SEG, GuidedPredictionIsTheFormulaInPAGsCall) {
  torch::NoGradGuard ng;
  auto net = attentive_net("dit");  // 16 tokens at its middle block (the tiny UNet's has 4, nearly one query)
  const std::string site = middle_attention_site(net->network());
  auto gen = at::make_generator<at::CPUGeneratorImpl>(8);
  auto x = at::randn({2, 1, 8, 8}, gen, torch::kFloat32);
  auto c = labels({0, 2});
  const double s = 0.7;
  auto xc = net->predict(x, s, c).x0(), xu = net->predict(x, s, c.null_like()).x0();
  // the weak branch by hand: every row's queries replaced by their mean at the site
  Hooks& h = net->network().hooks();
  h.add(site + ".q", [](const std::string&, const torch::Tensor& q, const HookContext&) {
    return q.mean(2, true).expand_as(q).contiguous();
  });
  auto xs = net->predict(x, s, c).x0();
  h.clear();
  EXPECT_GT((xs - xc).abs().max().item<double>(), 1e-4);
  GuidanceOptions g(3);
  g.set("seg", 2.0);
  auto got = make_guidance(net, g)->predict(x, s, c).x0();
  EXPECT_TRUE(torch::allclose(got, xu + 3 * (xc - xu) + 2 * (xc - xs), 1e-5, 1e-5));
  EXPECT_TRUE(net->network().hooks().empty());
  EXPECT_EQ(g.describe(), "cfg 3, SEG 2 sigma inf");
  g.set("pag", 1.0);
  EXPECT_EQ(error_of([&] { make_guidance(net, g); }), "--pag and --seg both replace cfg; give one");
  GuidanceOptions nowhere;
  nowhere.set("seg", 1.0).set("seg-sites", "nowhere.attn");
  EXPECT_NE(error_of([&] { make_guidance(net, nowhere)->predict(x, s, c); }).find("SEG: the dit network has no self-attention at 'nowhere.attn'"),
            std::string::npos);
}

// ---- SAG ----

TEST(SAG, BlurAndMaskMatchHandComputations) {
  // a centred delta blurs to the outer product of the normalized 9-tap Gaussian
  auto x = torch::zeros({1, 2, 11, 11});
  x[0][1][5][5] = 1;
  auto b = gaussian_blur(x, 9, 1.0);
  std::vector<double> k(9);
  double sum = 0;
  for (int i = 0; i < 9; ++i) sum += (k[i] = std::exp(-0.5 * (i - 4) * (i - 4)));
  for (int i = 0; i < 9; ++i)
    for (int j : {2, 4, 5}) EXPECT_NEAR(b[0][1][1 + i][1 + j].item<double>(), k[i] * k[j] / (sum * sum), 1e-6);
  EXPECT_EQ(b[0][0].abs().max().item<float>(), 0.f);
  EXPECT_NEAR(b.sum().item<double>(), 1.0, 1e-5);
  // a constant image stays constant (reflect padding)
  EXPECT_TRUE(torch::allclose(gaussian_blur(torch::full({1, 1, 8, 8}, 0.3), 9, 1.0), torch::full({1, 1, 8, 8}, 0.3), 1e-6, 1e-6));
  // mask: batch 2, 2 heads, 4 tokens (2x2 map) on a 4x4 image
  auto p = torch::full({4, 4, 4}, 0.25);  // uniform: every token receives exactly 1 -> no mask
  p[2] = torch::zeros({4, 4});
  p[2].select(1, 3).fill_(1);  // sample 1, head 0: every query attends to token 3 (receives 4; head mean 2.5)
  auto m = sag_mask(p, 2, 4, 4);
  ASSERT_EQ(m.sizes(), (std::vector<int64_t>{2, 1, 4, 4}));
  EXPECT_EQ(m[0].sum().item<float>(), 0.f);
  EXPECT_EQ(m[1].sum().item<float>(), 4.f);
  EXPECT_EQ(m[1][0].slice(0, 2, 4).slice(1, 2, 4).sum().item<float>(), 4.f);  // token 3 = bottom-right 2x2 block
  EXPECT_NE(error_of([&] { sag_mask(torch::full({2, 5, 5}, 0.2), 1, 4, 4); }).find("does not tile"), std::string::npos);
}

TEST(SAG, GuidedEpsIsTheFormulaOnEachRow) {
  torch::NoGradGuard ng;
  auto net = tiny_net("unet");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(8);
  auto x = at::randn({2, 1, 8, 8}, gen, torch::kFloat32) * 1.5;
  auto c = labels({1, -1});
  const double s = 1.3;
  // by hand: the attention map of the plain pass, the mask, the degraded state, the second pass
  torch::Tensor probs;
  Hooks& h = net->network().hooks();
  h.add("mid.attn.0.probs", [&](const std::string&, const torch::Tensor& a, const HookContext&) {
    probs = a.clone();
    return a;
  });
  Prediction p = net->predict(x, s, c);
  h.clear();
  auto mask = sag_mask(probs, 2, 8, 8);
  auto x0d = gaussian_blur(p.x0(), 9, 1.0) * mask + p.x0() * (1 - mask);
  auto ed = net->predict(net->process().add_noise(x0d, p.eps(), s), s, c).eps();
  auto want = p.eps() + 0.75 * (p.eps() - ed);
  SAGDenoiser sag(net, net, {0.75});
  auto got = sag.predict(x, s, c);
  EXPECT_TRUE(torch::allclose(got.eps(), want, 1e-5, 1e-5));
  EXPECT_FALSE(torch::allclose(got.eps(), p.eps(), 1e-4, 1e-4));
  EXPECT_TRUE(net->network().hooks().empty());
  // scale 0 is the inner denoiser, bit for bit (p above ran with a probs hook,
  // i.e. the explicit attention path; compare with an unhooked call)
  EXPECT_TRUE(torch::equal(SAGDenoiser(net, net, {0.0}).predict(x, s, c).x0(), net->predict(x, s, c).x0()));
}

// ---- AutoGuidance ----

TEST(AutoGuidance, FormulaSelfGuidanceAndMismatchedGuides) {
  torch::NoGradGuard ng;
  auto good = tiny_net("unet"), bad = tiny_dit();  // same process, shape and classes, other architecture
  auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
  auto x = at::randn({3, 1, 8, 8}, gen, torch::kFloat32);
  auto c = labels({0, -1, 2});
  const double s = 0.9;
  auto xg = good->predict(x, s, c).x0(), xb = bad->predict(x, s, c).x0();
  AutoGuidanceDenoiser ag(good, bad, 2.5);
  EXPECT_TRUE(torch::allclose(ag.predict(x, s, c).x0(), xb + 2.5 * (xg - xb), 1e-5, 1e-5));
  for (double w : {1.0, 2.0, 4.0})
    EXPECT_TRUE(torch::equal(AutoGuidanceDenoiser(good, good, w).predict(x, s, c).x0(), xg)) << w;
  GuidanceOptions o;
  o.set("autoguidance", 2.5);
  EXPECT_NE(error_of([&] { make_guidance(good, o); }).find("--autoguidance and --guide-model go together"), std::string::npos);
  o.attach("guide-model", DenoiserPtr(bad));
  EXPECT_TRUE(torch::allclose(make_guidance(good, o)->predict(x, s, c).x0(), xb + 2.5 * (xg - xb), 1e-5, 1e-5));
  auto other = std::make_shared<NetDenoiser>(bad->network_ptr(), make_process("vp:cosine"), Parameterization{});
  EXPECT_NE(error_of([&] { AutoGuidanceDenoiser(good, other, 2); }).find("process vp:cosine differs"), std::string::npos);
  EXPECT_NE(error_of([&] { check_guide_model(*good, {1, 8, 8}, 3, *bad, {1, 16, 16}, 3, "g.st"); })
                .find("g.st: samples of shape [1, 16, 16] differ from the model's [1, 8, 8]"),
            std::string::npos);
  EXPECT_NE(error_of([&] { check_guide_model(*good, {1, 8, 8}, 3, *bad, {1, 8, 8}, 10, "g.st"); })
                .find("g.st: 10 classes, the model has 3"),
            std::string::npos);
}

// ---- classifier and loss guidance ----

std::shared_ptr<Classifier> tiny_classifier(bool time_conditional) {
  ClassifierConfig cc;
  cc.height = cc.width = 8;
  cc.channels = {8, 8};
  cc.feature_dim = 8;
  cc.num_classes = 3;
  cc.norm_groups = 4;
  cc.time_conditional = time_conditional;
  auto clf = make_classifier(cc);
  torch::NoGradGuard ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(12);
  for (auto& p : clf->parameters()) p.copy_(at::randn(p.sizes(), gen, p.options()) * 0.3);
  return clf;
}

TEST(ClassifierGuidance, GuidedEpsIsEpsMinusScaleSigmaGradLogP) {
  torch::NoGradGuard ng;
  auto net = tiny_net("unet");
  auto clf = tiny_classifier(true);
  const Process& p = net->process();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(13);
  auto x = at::randn({3, 1, 8, 8}, gen, torch::kFloat32) * 2;
  auto c = labels({2, -1, 0});
  const double s = 1.7, scale = 4.0;
  torch::Tensor grad;
  {
    torch::AutoGradMode on(true);
    auto xt = (x * p.model_scale(s)).requires_grad_(true);
    auto lp = torch::log_softmax(clf->forward(xt, torch::full({3}, p.t_of(s)), {}), 1);
    (lp[0][2] + lp[2][0]).backward();
    grad = xt.grad();
  }
  EXPECT_EQ(grad[1].abs().max().item<float>(), 0.f);
  ClassifierGuidanceDenoiser cg(net, clf, scale);
  auto plain = net->predict(x, s, c);
  auto got = cg.predict(x, s, c);
  EXPECT_TRUE(torch::allclose(got.eps(), plain.eps() - scale * p.sigma_t(s) * grad, 1e-5, 1e-5));
  EXPECT_TRUE(torch::equal(got.eps()[1], plain.eps()[1]) ||
              torch::allclose(got.eps()[1], plain.eps()[1], 1e-6, 1e-6));  // the null row does not move
  EXPECT_TRUE(torch::equal(ClassifierGuidanceDenoiser(net, clf, 0).predict(x, s, c).x0(), plain.x0()));
  EXPECT_NE(error_of([&] { ClassifierGuidanceDenoiser(net, tiny_classifier(false), 1); }).find("noise-conditional"),
            std::string::npos);
  // the classifier's module paths gain only the time parts
  auto names = [](Network& n) {
    std::vector<std::string> v;
    for (auto& t : network_tensors(n)) v.push_back(t.first);
    return v;
  };
  auto clean = names(*tiny_classifier(false)), noisy = names(*clf);
  for (auto& k : clean) EXPECT_NE(std::find(noisy.begin(), noisy.end(), k), noisy.end()) << k;
  EXPECT_NE(std::find(noisy.begin(), noisy.end(), "time_embed.mlp.0.weight"), noisy.end());
  EXPECT_NE(std::find(noisy.begin(), noisy.end(), "stages.1.temb.weight"), noisy.end());
}

TEST(LossGuidance, GuidedEpsMatchesTheFormulaWithAFiniteDifferenceGradient) {
  // Exact mixture denoiser in float64: the gradient of L(x0_hat(x)) by
  // central differences against the autograd gradient inside the rule.
  auto base = std::make_shared<GMMDenoiser>(test_mixture(), make_process("vp"));
  const Process& p = base->process();
  auto x = points(4, 21, 1.2);
  Cond c = labels({0, 1, 0, 1});
  const double s = 0.8, scale = 0.6, target = 0.3;
  auto loss = brightness_loss(target);
  auto L = [&](const torch::Tensor& y) { return loss(base->predict(y, s, c).x0(), c); };
  auto grad = torch::zeros_like(x);
  const double h = 1e-5;
  for (int64_t i = 0; i < x.size(0); ++i)
    for (int64_t j = 0; j < x.size(1); ++j) {
      auto e = torch::zeros_like(x);
      e[i][j] = h;
      grad[i][j] = ((L(x + e) - L(x - e))[i] / (2 * h)).item<double>();
    }
  LossGuidanceDenoiser lg(base, loss, scale);
  auto plain = base->predict(x, s, c);
  auto got = lg.predict(x, s, c);
  // eps + scale sigma_t grad_{x_t} L, grad_{x_t} = grad_x / model_scale
  EXPECT_TRUE(same(got.eps(), plain.eps() + grad * (scale * p.sigma_t(s) / p.model_scale(s)), 1e-7));
  EXPECT_FALSE(same(got.eps(), plain.eps(), 1e-3));
  EXPECT_TRUE(torch::equal(LossGuidanceDenoiser(base, loss, 0).predict(x, s, c).x0(), plain.x0()));
  // the classifier loss: cross-entropy for the row's class, 0 on null rows
  auto clf = tiny_classifier(false);
  auto imgs = torch::randn({2, 1, 8, 8});
  auto ce = classifier_loss(clf)(imgs, labels({1, -1}));
  auto lp = torch::log_softmax(clf->forward(imgs, {}, {}), 1);
  EXPECT_NEAR(ce[0].item<double>(), -lp[0][1].item<double>(), 1e-6);
  EXPECT_EQ(ce[1].item<double>(), 0.0);
  EXPECT_NE(error_of([&] { classifier_loss(tiny_classifier(true)); }).find("clean images"), std::string::npos);
}

TEST(LossGuidance, ReferenceLossIsTheSquaredDistanceAfterPooling) {
  auto ref = torch::randn({1, 4, 6}, torch::kFloat64), x0 = torch::randn({3, 1, 4, 6}, torch::kFloat64);
  // factor 1: mean of squares over the pixels
  auto full = reference_loss(ref)(x0, {});
  EXPECT_TRUE(same(full, (x0 - ref).pow(2).reshape({3, -1}).mean(1), 1e-14));
  // factor 2: 2x2 block means compared, by hand
  auto blocks = [](const torch::Tensor& t) { return t.reshape({-1, 1, 2, 2, 3, 2}).mean({3, 5}); };
  auto pooled = reference_loss(ref, 2)(x0, {});
  EXPECT_TRUE(same(pooled, (blocks(x0) - blocks(ref)).pow(2).reshape({3, -1}).mean(1), 1e-14));
  // pooling forgets what averages out inside a block: a checkerboard added to the reference costs nothing
  auto checker = (torch::arange(4).reshape({4, 1}) + torch::arange(6)).remainder(2).to(torch::kFloat64) * 2 - 1;
  EXPECT_LT(reference_loss(ref, 2)((ref + 0.5 * checker).unsqueeze(0), {}).item<double>(), 1e-28);
  EXPECT_NEAR(reference_loss(ref)((ref + 0.5 * checker).unsqueeze(0), {}).item<double>(), 0.25, 1e-14);
  // one reference per sample
  auto refs = torch::randn({3, 1, 4, 6}, torch::kFloat64);
  EXPECT_TRUE(same(reference_loss(refs)(x0, {}), (x0 - refs).pow(2).reshape({3, -1}).mean(1), 1e-14));
  EXPECT_NE(error_of([&] { reference_loss(refs)(x0.slice(0, 0, 2), {}); }).find("3 references for 2 samples"),
            std::string::npos);
  EXPECT_NE(error_of([&] { reference_loss(ref, 4); }).find("does not divide"), std::string::npos);
  EXPECT_NE(error_of([&] { reference_loss(ref)(torch::zeros({2, 1, 4, 4}), {}); }).find("do not match"),
            std::string::npos);
  EXPECT_NE(error_of([&] { reference_loss(ref * NAN); }).find("non-finite"), std::string::npos);
}

// Guided samples on the default model: 10 per run (one per class), 10 DDIM steps.
struct DefaultModelRun {
  std::shared_ptr<NetDenoiser> model =
      load_model_file(source_path("models/fashion_mnist.safetensors")).denoiser;
  std::shared_ptr<Classifier> judge =
      as_classifier(load_network(source_path("models/fashion_mnist_classifier.safetensors")), "classifier");
  Cond c = labels({0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  torch::Tensor sample(const GuidanceOptions& g, int64_t seed = 3) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    auto noise = at::randn({10, 1, 28, 28}, gen, torch::kFloat32);
    torch::NoGradGuard ng;
    auto d = make_guidance(model, g);
    return generate(*d, find_sampler("ddim"), make_schedule("karras", model->process(), 10), noise, c, {}, gen)
        .x.clamp(-1, 1);
  }
  // mean probability of each row's class under the evaluation classifier
  double confidence(const torch::Tensor& x) {
    torch::NoGradGuard ng;
    return torch::softmax(judge->forward(x, {}, {}), 1).gather(1, c.labels.unsqueeze(1)).mean().item<double>();
  }
};

TEST(ShippedGuidance, ClassifierAndLossGuidanceRaiseTheTargetClassConfidence) {
  DefaultModelRun r;
  GuidanceOptions plain;
  auto x0 = r.sample(plain);
  EXPECT_TRUE(torch::equal(r.sample(plain), x0));
  const double base = r.confidence(x0);
  GuidanceOptions cg;
  cg.set("classifier-guidance", 2.0);
  cg.attach("guide-classifier",
            as_classifier(load_network(source_path("models/fashion_mnist_noisy_classifier.safetensors")), "noisy"));
  const double with_cg = r.confidence(r.sample(cg));
  GuidanceOptions lg;
  lg.set("loss-guidance", "classifier").attach("loss-classifier", r.judge);
  const double with_lg = r.confidence(r.sample(lg));
  std::printf("target-class confidence: plain %.3f, classifier guidance %.3f, loss guidance %.3f\n", base, with_cg,
              with_lg);
  EXPECT_GT(with_cg, base + 0.05);
  EXPECT_GT(with_lg, base + 0.05);
  // the brightness loss moves the mean pixel toward its target
  GuidanceOptions bright;
  bright.set("loss-guidance", "brightness").set("loss-target", 0.5).set("loss-scale", 20.0);
  const double m0 = x0.mean().item<double>(), m1 = r.sample(bright).mean().item<double>();
  std::printf("mean pixel: plain %.3f, brightness loss toward 0.5: %.3f\n", m0, m1);
  EXPECT_LT(std::abs(m1 - 0.5), std::abs(m0 - 0.5) - 0.1);
  // the reference loss (4x4 pooling) pulls every sample's layout toward one sample's
  auto ref = x0[3];
  GuidanceOptions toward;
  toward.set("loss-guidance", "reference").set("loss-factor", 4.0).set("loss-scale", 200.0);
  toward.attach("loss-reference", torch::Tensor(ref.unsqueeze(0)));
  auto dist = [&](const torch::Tensor& xs) {
    auto d = torch::avg_pool2d(xs, {4, 4}) - torch::avg_pool2d(ref.unsqueeze(0), {4, 4});
    return d.pow(2).mean().item<double>();
  };
  const double d0 = dist(x0), d1 = dist(r.sample(toward));
  std::printf("pooled squared distance to one sample: plain %.4f, reference loss %.4f\n", d0, d1);
  EXPECT_LT(d1, d0 / 2);
}

TEST(ShippedGuidance, PAGAndSAGChangeSamplesAndAreNeutralAtZero) {
  DefaultModelRun r;
  GuidanceOptions plain;
  plain.set("cfg", 3.0);
  auto x0 = r.sample(plain);
  GuidanceOptions zero = plain;
  zero.set("pag", 0.0);
  zero.set("sag", 0.0);
  zero.set("autoguidance", 1.0);
  zero.set("classifier-guidance", 0.0);
  EXPECT_TRUE(torch::equal(r.sample(zero), x0));
  GuidanceOptions pag = plain, sag = plain;
  pag.set("pag", 2.0);
  sag.set("sag", 0.75);
  auto xp = r.sample(pag), xs = r.sample(sag);
  EXPECT_GT((xp - x0).abs().mean().item<double>(), 0.003);  // a real change (the pixel step is 2/255 = 0.008)
  EXPECT_GT((xs - x0).abs().mean().item<double>(), 0.01);
  EXPECT_GT(r.confidence(xp), 0.5);
  EXPECT_GT(r.confidence(xs), 0.5);
  // AutoGuidance with the good model as its own guide is the good model
  GuidanceOptions self = plain;
  self.set("autoguidance", 2.0);
  self.attach("guide-model", DenoiserPtr(load_model_file(source_path("models/fashion_mnist.safetensors")).denoiser));
  EXPECT_TRUE(torch::equal(r.sample(self), x0));
}

TEST(Guidance, EverySamplerRunsUnderAllTheNetworkRules) {
  auto net = tiny_net("unet");
  auto x = at::randn({2, 1, 8, 8}, at::make_generator<at::CPUGeneratorImpl>(30), torch::kFloat32);
  Cond c = labels({0, 2});
  auto levels = make_schedule("karras", net->process(), 4);
  GuidanceOptions neutral;
  neutral.set("autoguidance", 1.0).set("pag", 0.0).set("sag", 0.0).set("classifier-guidance", 0.0);
  EXPECT_EQ(make_guidance(net, neutral), net);  // every rule at its neutral value: the base itself
  GuidanceOptions all;
  all.set("cfg", 2.0);
  all.set("pag", 1.0);
  all.set("sag", 0.5);
  all.set("autoguidance", 1.5);
  all.attach("guide-model", DenoiserPtr(tiny_dit()));
  all.set("classifier-guidance", 0.5);
  all.attach("guide-classifier", std::shared_ptr<Classifier>(tiny_classifier(true)));
  all.set("loss-scale", 0.5);
  all.attach("loss", GuidanceLoss(brightness_loss(0.2)));
  // cfg first, then the rules in composition order (inside out)
  EXPECT_EQ(all.describe(),
            "cfg 2, SAG 0.5, AutoGuidance 1.5, PAG 1, loss guidance 0.5 (attached), classifier guidance 0.5");
  torch::NoGradGuard ng;
  for (auto& info : samplers()) {
    auto run = [&](DenoiserPtr d) {
      SamplerRun r(*d, levels, c, {}, at::make_generator<at::CPUGeneratorImpl>(9));
      return run_sampler(info, r, x * levels[0]);
    };
    auto out = run(make_guidance(net, all));
    EXPECT_TRUE(torch::isfinite(out).all().item<bool>()) << info.name;
    EXPECT_FALSE(torch::allclose(out, run(net), 1e-3, 1e-3)) << info.name;
    EXPECT_TRUE(net->network().hooks().empty()) << info.name;
  }
}

// ---- the CLI ----

TEST(GuidanceCli, NewRulesRunAndBadInputIsOneClearError) {
  const std::string out = tmp("pag.png");
  std::remove(out.c_str());
  auto r = cli("sample --class 0 -n 2 --steps 3 --cfg 3 --pag 2 --sag 0.5 -q -o " + out);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(exists(out));
  // a guide model of another shape or process, a classifier with other classes
  const std::string dir = tmp("guides");
  std::system(("mkdir -p " + dir).c_str());
  auto small = tiny_net("unet");
  NetDenoiser cosine(small->network_ptr(), make_process("vp:cosine"), Parameterization{PredKind::V});
  save_model_file(dir + "/shape.safetensors", cosine, {});
  auto same_shape = make_network("unet", R"({"in_channels":1,"image_size":28,"model_channels":8,"channel_mult":[1,2],
      "num_res_blocks":1,"attention_resolutions":[2],"num_heads":2,"norm_groups":4,"num_classes":10})");
  NetDenoiser other_process(same_shape, make_process("vp"), Parameterization{PredKind::V});
  save_model_file(dir + "/process.safetensors", other_process, {});
  auto clf3 = tiny_classifier(true);
  save_network(dir + "/clf3.safetensors", *clf3, {{"tweedie.process", "vp:cosine"}});
  const std::string base = "sample --class 0 -n 1 --steps 2 -q -o " + dir + "/x.png ";
  expect_error(base + "--autoguidance 2 --guide-model " + dir + "/missing.safetensors", "missing.safetensors: no such file");
  expect_error(base + "--autoguidance 2 --guide-model " + dir + "/shape.safetensors",
               "samples of shape [1, 8, 8] differ from the model's [1, 28, 28]");
  expect_error(base + "--autoguidance 2 --guide-model " + dir + "/process.safetensors",
               "process vp differs from the model's vp:cosine");
  expect_error(base + "--autoguidance 2", "--autoguidance and --guide-model go together");
  expect_error(base + "--classifier-guidance 1 --guide-classifier " + dir + "/clf3.safetensors",
               "3 classes, the model has 10");
  expect_error(base + "--classifier-guidance 1 --guide-classifier models/fashion_mnist_classifier.safetensors",
               "a classifier of clean images");
  expect_error(base + "--loss-guidance sharpness", "--loss-guidance: unknown loss 'sharpness'");
  expect_error(base + "--loss-target 0.5", "--loss-target needs --loss-guidance");
  save_npy(dir + "/ref.npy", torch::zeros({1, 1, 28, 28}));
  save_npy(dir + "/refs.npy", torch::zeros({2, 1, 28, 28}));
  save_npy(dir + "/small.npy", torch::zeros({1, 1, 8, 8}));
  r = cli(base + "--loss-guidance reference --loss-reference " + dir + "/ref.npy --loss-factor 4 --loss-scale 50");
  EXPECT_EQ(r.code, 0) << r.out;
  expect_error(base + "--loss-reference " + dir + "/ref.npy", "--loss-reference needs --loss-guidance");
  expect_error(base + "--loss-guidance brightness --loss-factor 2", "--loss-factor is for --loss-guidance reference");
  expect_error(base + "--loss-guidance reference", "--loss-guidance reference needs --loss-reference");
  expect_error(base + "--loss-guidance reference --loss-reference " + dir + "/ref.npy --loss-factor 5",
               "--loss-factor 5 must divide the model's image size");
  expect_error(base + "--loss-guidance reference --loss-reference " + dir + "/refs.npy", "give one image");
  expect_error(base + "--loss-guidance reference --loss-reference " + dir + "/small.npy", "small.npy: 8x8 pixels, the model takes 28x28");
  expect_error(base + "--pag-sites mid.attn.0", "--pag-sites needs --pag");
  expect_error(base + "--pag 1 --pag-sites up.9.attn.0", "no self-attention at 'up.9.attn.0'");
  expect_error("sample -m gmm:models/gmm/ring2d.json -n 1 --steps 2 -q -o " + dir + "/y.npy --pag 1",
               "--pag needs a network model");
  expect_error("train-classifier --noisy -c " + dir + "/none.json -o " + dir + "/c.safetensors", "none.json");
}

}  // namespace

namespace {

// Nested branch scopes label the rows of a batched call by path.
TEST(Hooks, BranchScopesLabelRowsByPath) {
  EXPECT_TRUE(current_hook_context(0.5, 4).branches.empty());
  EXPECT_EQ(current_hook_context(0.5, 4).step, -1);
  BranchScope outer({"source", "target"});
  {
    BranchScope inner({"cond", "uncond"});
    StepScope step(3);
    const HookContext c = current_hook_context(0.25, 8);
    EXPECT_EQ(c.step, 3);
    EXPECT_EQ(c.s, 0.25);
    ASSERT_EQ(c.branches.size(), 4u);
    const std::vector<std::pair<std::string, int64_t>> want = {
        {"source/cond", 0}, {"target/cond", 2}, {"source/uncond", 4}, {"target/uncond", 6}};
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(c.branches[i].name, want[i].first);
      EXPECT_EQ(c.branches[i].begin, want[i].second);
      EXPECT_EQ(c.branches[i].end, want[i].second + 2);
    }
    EXPECT_EQ(c.rows("cond"), (std::vector<int64_t>{0, 1, 2, 3}));
    EXPECT_EQ(c.rows("target"), (std::vector<int64_t>{2, 3, 6, 7}));
    EXPECT_TRUE(c.rows("con").empty());  // whole components only
    EXPECT_EQ(c.branch_of(5), "source/uncond");
    EXPECT_EQ(c.branch_of(8), "");
    EXPECT_TRUE(current_hook_context(0.25, 6).branches.empty());  // 6 rows are not 2 x 2 copies
  }
  EXPECT_EQ(current_hook_context(0.5, 4).step, -1);
  EXPECT_EQ(current_hook_context(0.5, 4).branches.size(), 2u);
}

// A hook sees the sampler's step and which rows are which branch along a CFG + PAG run.
TEST(Hooks, ContextCarriesStepsAndBranchRowsThroughGuidedSampling) {
  auto net = tiny_net("unet");
  struct Seen {
    int step;
    double s;
    std::vector<HookBranch> branches;
    int64_t rows;
  };
  std::vector<Seen> seen;
  ScopedHook hook(net->network().hooks(), "temb", [&](const std::string&, const torch::Tensor& v, const HookContext& c) {
    seen.push_back({c.step, c.s, c.branches, v.size(0)});
    return v;
  });
  GuidanceOptions g;
  g.set("cfg", 2.0);
  g.set("pag", 1.5);
  auto guided = make_guidance(net, g);
  const int n = 2, steps = 4;
  for (const char* name : {"euler", "heun", "dpmpp-2m"}) {
    seen.clear();
    const SamplerInfo& info = find_sampler(name);
    const auto levels = karras_levels(10, 0.1, steps - 1);  // steps levels; with the terminal 0, `steps` steps
    std::vector<double> sigmas(levels.begin(), levels.end());
    sigmas.push_back(0);
    SamplerRun run(*guided, sigmas, labels({0, 2}));
    run_sampler(info, run, torch::randn({n, 1, 8, 8}) * 10);
    ASSERT_EQ(int(seen.size()), run.nfe) << name;
    int last = 0;
    for (const auto& e : seen) {
      EXPECT_GE(e.step, last) << name;  // in order, each call in the step in progress
      EXPECT_LT(e.step, steps) << name;
      last = e.step;
      ASSERT_EQ(e.rows, 3 * n) << name;
      ASSERT_EQ(e.branches.size(), 3u) << name;
      EXPECT_EQ(e.branches[0].name, "cond");
      EXPECT_EQ(e.branches[1].name, "uncond");
      EXPECT_EQ(e.branches[2].name, "perturbed");
      EXPECT_EQ(e.branches[2].begin, 2 * n);
      EXPECT_EQ(e.branches[2].end, 3 * n);
    }
    EXPECT_EQ(seen.front().step, 0) << name;
    EXPECT_EQ(seen.back().step, steps - 1) << name;
  }
  // Outside sampling, and with CFG alone: step -1, two branches.
  seen.clear();
  GuidanceOptions c;
  c.set("cfg", 3.0);
  make_guidance(net, c)->predict(torch::randn({n, 1, 8, 8}), 1.0, labels({1, 1}));
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].step, -1);
  ASSERT_EQ(seen[0].branches.size(), 2u);
  EXPECT_EQ(seen[0].branches[1].name, "uncond");
}

}  // namespace
