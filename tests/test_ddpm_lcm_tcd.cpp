// DDPM (small and large variance), LCM and TCD: identities with DDIM and with
// each other, the diffusers TCD intermediate level, reproduction of the test
// mixture's moments, and bit-for-bit determinism.
#include <gtest/gtest.h>

#include <algorithm>

#include "testing.h"
#include "tweedie/core/error.h"

using namespace tweedie;
using namespace tweedie::testing;

namespace {

torch::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

torch::Tensor run(const std::string& name, Denoiser& d, const torch::Tensor& x, const std::vector<double>& sig,
                  uint64_t seed, SamplerOptions opt = {}) {
  SamplerRun r(d, sig, {}, opt, gen(seed));
  return run_sampler(find_sampler(name), r, x.clone());
}

// Exact samples of the start level: a(s) x0 + s z (pure noise on flow at s = 1).
torch::Tensor start(const Denoiser& d, const GaussianMixture& m, int64_t n, double s, uint64_t seed) {
  auto g = gen(seed);
  auto x0 = m.sample(n, g).to(torch::kFloat64);
  return d.process().add_noise(x0, at::randn({n, m.dim()}, g, torch::kFloat64), s);
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

std::vector<double> levels(const Process& p) { return make_schedule("karras", p, 50); }

// Mean and covariance within 4 standard errors (estimated from the samples)
// plus a bias allowance.
void expect_moments(const torch::Tensor& y, const GaussianMixture& m, double bias, const std::string& what) {
  const int64_t n = y.size(0);
  auto mean = m.mean(), cov = m.covariance();
  auto mu = y.mean(0);
  auto c = y - mu;
  auto prods = c.unsqueeze(2) * c.unsqueeze(1);
  auto cv = prods.sum(0) / (n - 1);
  auto se_m = (cov.diagonal() / n).sqrt(), se_c = prods.std(0) / std::sqrt(double(n));
  EXPECT_TRUE(((mu - mean).abs() < se_m * 4 + bias).all().item<bool>()) << what << ": mean " << mu << " vs " << mean;
  EXPECT_TRUE(((cv - cov).abs() < se_c * 4 + bias).all().item<bool>()) << what << ": covariance " << cv << " vs "
                                                                           << cov;
}

// A consistency function of the mixture: the PF-ODE endpoint (RK4 to 1e-4,
// then the posterior mean there), what a perfectly distilled consistency
// model returns.
class ConsistencyGMM : public Denoiser {
 public:
  explicit ConsistencyGMM(GMMDenoiser& d) : d_(d) {}
  const Process& process() const override { return d_.process(); }
  Prediction predict(const torch::Tensor& x, double s, const Cond& c) override {
    auto y = pf_ode_reference(d_, x, s, 1e-4, c, 100);
    return Prediction::from_x0(d_.predict(y, 1e-4, c).x0().to(x.dtype()), x, s, process());
  }

 private:
  GMMDenoiser& d_;
};

// A trajectory consistency function for TCD on a schedule of training
// timesteps: from level s (timestep list ts[i]) it returns the x0 whose DDIM
// step lands exactly on the PF-ODE solution at TCD's intermediate level
// s_mid = level of floor((1 - gamma) t') (diffusers), i.e. x0 solving
// y_mid = a(s_mid) x0 + s_mid (x - a(s) x0) / s; at the last step s_mid = 0
// and it is the consistency function.
class TrajectoryGMM : public Denoiser {
 public:
  TrajectoryGMM(GMMDenoiser& d, std::vector<double> sig, std::vector<int> ts, double gamma)
      : d_(d), cf_(d), sig_(std::move(sig)), ts_(std::move(ts)), gamma_(gamma) {}
  const Process& process() const override { return d_.process(); }
  Prediction predict(const torch::Tensor& x, double s, const Cond& c) override {
    const Process& p = process();
    size_t i = std::find(sig_.begin(), sig_.end(), s) - sig_.begin();
    if (i + 2 >= sig_.size()) return cf_.predict(x, s, c);  // last step: s_mid = 0
    const double sm = p.s_at_timestep(std::floor((1 - gamma_) * ts_[i + 1]));
    auto y = pf_ode_reference(d_, x, s, sm, c, 100);
    auto x0 = (y - x * (sm / s)) / (p.a(sm) - p.a(s) * sm / s);
    return Prediction::from_x0(x0.to(x.dtype()), x, s, p);
  }

 private:
  GMMDenoiser& d_;
  ConsistencyGMM cf_;
  std::vector<double> sig_;
  std::vector<int> ts_;
  double gamma_;
};

TEST(DDPM, SmallVarianceIsDDIMEtaOne) {
  for (std::string spec : {"vp", "edm", "flow", "vp+ztsnr"}) {
    auto p = make_process(spec);
    GMMDenoiser d(test_mixture(), p);
    auto sig = levels(*p);
    auto x = start(d, d.mixture(), 64, sig[0], 3);
    SamplerOptions eta1;
    eta1.eta = 1;
    auto a = run("ddpm", d, x, sig, 5), b = run("ddim", d, x, sig, 5, eta1);
    EXPECT_LT(max_diff(a, b), 1e-12) << spec;
    EXPECT_GT(max_diff(a, run("ddim", d, x, sig, 5)), 1e-3) << spec;  // not deterministic DDIM
  }
}

TEST(DDPM, LargeVarianceAddsTheMissingVariance) {
  // One step s -> s' of ddpm-large from x with a point-mass denoiser (x0 = 0):
  // the noise variance in VP space is beta = 1 - abar/abar'.
  auto p = make_process("vp");
  GaussianMixture m;
  m.shape = {1};
  m.weights = torch::tensor({1.0}, torch::kFloat64);
  m.means = torch::zeros({1, 1}, torch::kFloat64);
  m.variances = torch::full({1, 1}, 1e-12, torch::kFloat64);
  GMMDenoiser d(m, p);
  const double s = p->s_at_timestep(600), sn = p->s_at_timestep(400);
  auto x = torch::zeros({20000, 1}, torch::kFloat64);
  auto y = run("ddpm-large", d, x, {s, sn}, 9);
  const double abar = 1 / (1 + s * s), abar_n = 1 / (1 + sn * sn), beta = 1 - abar / abar_n;
  // VP state x_t' = sqrt(abar') y, so Var(y) = beta / abar'.
  EXPECT_NEAR(y.var().item<double>(), beta / abar_n, 0.03 * beta / abar_n);
  auto ys = run("ddpm", d, x, {s, sn}, 9);
  const double small = (1 - abar_n) / (1 - abar) * beta;
  EXPECT_NEAR(ys.var().item<double>(), small / abar_n, 0.03 * small / abar_n);
}

TEST(TCD, GammaZeroIsDDIM) {
  for (std::string spec : {"vp", "edm", "flow"}) {
    auto p = make_process(spec);
    GMMDenoiser d(test_mixture(), p);
    for (std::string sch : {"trailing", "karras"}) {
      auto sig = make_schedule(sch, *p, 12);
      auto x = start(d, d.mixture(), 64, sig[0], 3);
      SamplerOptions g0;
      g0.own.set("gamma", 0);
      EXPECT_LT(max_diff(run("tcd", d, x, sig, 5, g0), run("ddim", d, x, sig, 5)), 1e-12) << spec << " " << sch;
    }
  }
}

TEST(TCD, GammaOneIsLCM) {
  for (std::string spec : {"vp", "edm", "flow"}) {
    auto p = make_process(spec);
    GMMDenoiser d(test_mixture(), p);
    auto sig = make_schedule("karras", *p, 8);
    auto x = start(d, d.mixture(), 64, sig[0], 3);
    SamplerOptions g1;
    g1.own.set("gamma", 1);
    EXPECT_LT(max_diff(run("tcd", d, x, sig, 5, g1), run("lcm", d, x, sig, 5)), 1e-12) << spec;
  }
}

// diffusers: from timestep t to t', DDIM to floor((1 - gamma) t') and renoise.
// With x = 0 and a denoiser that returns x0 = 0, one step gives exactly the
// renoising term a(s') sqrt(sigma'^2 - sigma_mid^2) z, which reveals sigma_mid.
TEST(TCD, IntermediateLevelFollowsDiffusers) {
  auto p = make_process("vp");
  GaussianMixture m;
  m.shape = {1};
  m.weights = torch::tensor({1.0}, torch::kFloat64);
  m.means = torch::zeros({1, 1}, torch::kFloat64);
  m.variances = torch::ones({1, 1}, torch::kFloat64);
  GMMDenoiser d(m, p);
  std::vector<std::tuple<int, int, double>> cases = {{999, 759, 0.3}, {759, 499, 0.3}, {499, 259, 0.5}, {259, 19, 0.2}};
  for (auto [t, tn, gamma] : cases) {
    SamplerOptions o;
    o.own.set("gamma", gamma);
    const double s = p->s_at_timestep(t), sn = p->s_at_timestep(tn);
    auto y = run("tcd", d, torch::zeros({8, 1}, torch::kFloat64), {s, sn}, 4, o);
    auto z = at::randn({8, 1}, gen(4), torch::kFloat64);
    const double amp = (y / z).mean().item<double>();  // a(s') sqrt(sn^2 - s_mid^2), a = 1 on vp
    const double s_mid = p->s_at_timestep(std::floor((1 - gamma) * tn));
    EXPECT_NEAR(amp, std::sqrt(sn * sn - s_mid * s_mid), 1e-10) << t << " -> " << tn;
  }
}

TEST(TCD, RejectsGammaOutsideUnitInterval) {
  auto p = make_process("vp");
  GMMDenoiser d(test_mixture(), p);
  SamplerOptions o;
  o.own.set("gamma", 1.5);
  auto sig = make_schedule("karras", *p, 4);
  EXPECT_EQ(error_of([&] { run("tcd", d, torch::zeros({2, 2}), sig, 1, o); }),
            "sampler 'tcd': --gamma must be in [0, 1] (got 1.5)");
  // an option another sampler declares
  SamplerOptions other;
  other.own.set("gamma", 0.5);
  EXPECT_EQ(error_of([&] { run("euler", d, torch::zeros({2, 2}), sig, 1, other); }),
            "sampler 'euler': --gamma does not apply");
}

TEST(LCM, OneStepIsTheDenoiser) {
  auto p = make_process("edm");
  GMMDenoiser d(test_mixture(), p);
  auto x = torch::randn({16, 2}, torch::kFloat64) * 40;
  EXPECT_LT(max_diff(run("lcm", d, x, {40.0, 0.0}, 1), d.predict(x, 40.0, {}).x0()), 1e-15);
}

// 4000 samples from the exact start distribution at 50 Karras steps.
TEST(DDPMLCMTCD, DDPMReproducesMixtureMoments) {
  const int64_t n = 4000;
  for (std::string spec : {"vp", "flow"}) {
    auto p = make_process(spec);
    GMMDenoiser d(test_mixture(), p);
    auto sig = levels(*p);
    auto x = start(d, d.mixture(), n, sig[0], 21);
    for (std::string name : {"ddpm", "ddpm-large"})
      expect_moments(run(name, d, x, sig, 31).to(torch::kFloat64), d.mixture(), 0.02, name + " on " + spec);
  }
}

// At few steps the plug-in posterior mean makes the small variance
// under-disperse, and the large variance (right only for x0 ~ N(0, I), Ho et
// al.) over-disperses: at 5 steps the covariance trace of ddpm is below the
// mixture's and that of ddpm-large above it.
TEST(DDPMLCMTCD, DDPMVariancesBracketTheTruthAtFewSteps) {
  const int64_t n = 8000;
  auto p = make_process("vp");
  GMMDenoiser d(test_mixture(), p);
  auto sig = make_schedule("linspace", *p, 5);
  auto x = start(d, d.mixture(), n, sig[0], 21);
  auto trace = [&](const std::string& name) {
    auto y = run(name, d, x, sig, 31);
    auto c = y - y.mean(0);
    return (c * c).sum().item<double>() / (n - 1);
  };
  const double truth = d.mixture().covariance().trace().item<double>();
  const double small = trace("ddpm"), large = trace("ddpm-large");
  EXPECT_LT(small, truth - 0.1) << "ddpm at 5 steps";
  EXPECT_GT(large, truth + 0.05) << "ddpm-large at 5 steps";
}

// TCD is exact for any gamma when the model is a trajectory consistency
// function: 4 trailing steps (999, 749, 499, 249) reproduce the mixture.
TEST(DDPMLCMTCD, TCDWithTrajectoryConsistencyFunctionIsExact) {
  const int64_t n = 4000;
  for (std::string spec : {"vp", "flow"}) {
    auto p = make_process(spec);
    GMMDenoiser g(test_mixture(), p);
    auto sig = make_schedule("trailing", *p, 4);
    for (double gamma : {0.3, 0.7}) {
      TrajectoryGMM d(g, sig, {999, 749, 499, 249}, gamma);
      SamplerOptions o;
      o.own.set("gamma", gamma);
      auto x = start(g, g.mixture(), n, sig[0], 21);
      expect_moments(run("tcd", d, x, sig, 31, o).to(torch::kFloat64), g.mixture(), 0.005,
                     "tcd gamma " + std::to_string(gamma) + " on " + spec);
    }
  }
}

// Multistep consistency sampling with an exact consistency function is exact
// at any number of steps: 3 steps reproduce the mixture.
TEST(DDPMLCMTCD, LCMWithConsistencyFunctionIsExact) {
  const int64_t n = 4000;
  for (std::string spec : {"vp", "flow"}) {
    auto p = make_process(spec);
    GMMDenoiser g(test_mixture(), p);
    ConsistencyGMM d(g);
    auto sig = make_schedule(p->space() == Space::Flow ? "flow-shift" : "lcm", *p, 3);
    auto x = start(g, g.mixture(), n, sig[0], 21);
    expect_moments(run("lcm", d, x, sig, 31).to(torch::kFloat64), g.mixture(), 0.005, "lcm on " + spec);
  }
}

TEST(DDPMLCMTCD, SameSeedSameBits) {
  auto p = make_process("vp");
  GMMDenoiser d(test_mixture(), p);
  auto sig = make_schedule("karras", *p, 10);
  auto x = start(d, d.mixture(), 32, sig[0], 1).to(torch::kFloat32);
  for (std::string name : {"ddpm", "ddpm-large", "lcm", "tcd"}) {
    EXPECT_TRUE(torch::equal(run(name, d, x, sig, 11), run(name, d, x, sig, 11))) << name;
    EXPECT_FALSE(torch::equal(run(name, d, x, sig, 11), run(name, d, x, sig, 12))) << name;
    EXPECT_TRUE(find_sampler(name).stochastic) << name;
  }
}

}  // namespace
