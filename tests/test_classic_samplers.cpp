// Classic samplers: heun, dpm2(-a), lms, ipndm(-v), pndm, plms,
// gradient-estimation, er-sde, euler(-a)-cfg++. Convergence orders are in
// test_order.cpp; here: updates written out, equalities between samplers,
// inversion, seeds, edge levels, and the sampled distribution.
#include <gtest/gtest.h>

#include "testing.h"

using namespace tweedie;
using namespace tweedie::testing;

namespace {

const std::vector<std::string> kMine = {"heun", "dpm2",  "dpm2-a",     "lms",    "ipndm",         "ipndm-v",
                                        "pndm", "plms",  "gradient-estimation", "er-sde", "euler-cfg++",
                                        "euler-a-cfg++"};

torch::Tensor run(const std::string& name, Denoiser& d, const torch::Tensor& x, std::vector<double> sigmas,
                  uint64_t seed = 1, SamplerOptions opt = {}) {
  SamplerRun r(d, std::move(sigmas), {}, opt, at::make_generator<at::CPUGeneratorImpl>(seed));
  return run_sampler(find_sampler(name), r, x.clone());
}

torch::Tensor start(int64_t n, double s, uint64_t seed = 3, torch::Dtype dt = torch::kFloat64) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn({n, 2}, gen, torch::TensorOptions().dtype(dt)) * s;
}

TEST(Heun, OneStepIsKarrasAlgorithm2) {
  for (std::string proc : {"edm", "flow"}) {
    GMMDenoiser d(test_mixture(), make_process(proc));
    const double s = proc == "flow" ? 0.8 : 3.0, sn = proc == "flow" ? 0.5 : 1.5;
    auto x = start(16, s);
    auto D = [&](const torch::Tensor& y, double l) { return d.predict(y, l, {}).x0(); };
    auto dx = (x - D(x, s)) / s;
    auto x2 = x + (sn - s) * dx;
    auto d2 = (x2 - D(x2, sn)) / sn;
    auto expect = x + (sn - s) * (0.5 * dx + 0.5 * d2);
    EXPECT_TRUE(torch::allclose(run("heun", d, x, {s, sn}), expect, 1e-12, 1e-12)) << proc;
    // The step to 0 is Euler, landing on the denoised estimate.
    EXPECT_TRUE(torch::allclose(run("heun", d, x, {s, 0.0}), D(x, s), 1e-12, 1e-12)) << proc;
  }
}

TEST(Plms, FirstStepIsPseudoImprovedEuler) {
  auto proc = make_process("vp");
  GMMDenoiser d(test_mixture(), proc);
  const double s = 2.0, sn = 1.0;
  auto x = start(16, s);
  auto eps = [&](const torch::Tensor& y, double l) { return d.predict(y, l, {}).eps(); };
  auto phi = [&](const torch::Tensor& y, const torch::Tensor& e, double l, double ln) {
    return Prediction({PredKind::Eps}, e, y, l, *proc).x0() * proc->a(ln) + e * ln;
  };
  auto e1 = eps(x, s);
  auto e2 = eps(phi(x, e1, s, sn), sn);
  EXPECT_TRUE(torch::allclose(run("plms", d, x, {s, sn}), phi(x, (e1 + e2) / 2, s, sn), 1e-12, 1e-12));
  // PNDM's first step is the pseudo Runge-Kutta 4 step with the log-midpoint.
  const double sm = std::sqrt(s * sn);
  auto k2 = eps(phi(x, e1, s, sm), sm), k3 = eps(phi(x, k2, s, sm), sm), k4 = eps(phi(x, k3, s, sn), sn);
  EXPECT_TRUE(
      torch::allclose(run("pndm", d, x, {s, sn}), phi(x, (e1 + 2 * k2 + 2 * k3 + k4) / 6, s, sn), 1e-12, 1e-12));
}

TEST(Ipndm, EqualStepsAgreeWithLms) {
  // On steps uniform in s the fixed AB coefficients (ipndm), ipndm-v's and the
  // exact Lagrange integrals (lms) all coincide.
  GMMDenoiser d(test_mixture(), make_process("edm"));
  std::vector<double> sig;
  for (int i = 0; i <= 20; ++i) sig.push_back(10.0 - 9.5 * i / 20);
  auto x = start(32, 10.0);
  auto a = run("lms", d, x, sig), b = run("ipndm", d, x, sig), c = run("ipndm-v", d, x, sig);
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-11);
  EXPECT_LT((a - c).abs().max().item<double>(), 1e-11);
  // On unequal steps ipndm-v's second step is exact variable-step AB2, as lms's.
  std::vector<double> s3 = {10.0, 7.0, 2.0};
  EXPECT_LT((run("lms", d, x, s3) - run("ipndm-v", d, x, s3)).abs().max().item<double>(), 1e-11);
}

TEST(Lms, LastStepIntegratesTheMultistepPolynomialToZero) {
  // k-diffusion's sample_lms (and ComfyUI's, stable-diffusion.cpp's) takes
  // the AB step down to sigma 0 instead of returning the denoised estimate.
  // Levels 10 -> 4 -> 0: an Euler step, then AB2 through s = 4 and 10:
  //   int_4^0 (tau - 10) / (4 - 10) dtau = -16/3,  int_4^0 (tau - 4) / (10 - 4) dtau = 4/3.
  GMMDenoiser d(test_mixture(), make_process("edm"));
  auto x = start(32, 10.0);
  auto deriv = [&](const torch::Tensor& y, double s) { return (y - d.predict(y, s, {}).x0()) / s; };
  auto d0 = deriv(x, 10.0);
  auto x1 = x - 6.0 * d0;
  auto d1 = deriv(x1, 4.0);
  auto want = x1 - 16.0 / 3.0 * d1 + 4.0 / 3.0 * d0;
  auto got = run("lms", d, x, {10.0, 4.0, 0.0});
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-10);
  EXPECT_GT((got - d.predict(x1, 4.0, {}).x0()).abs().max().item<double>(), 1e-3);  // not the x0 estimate
}

// A stand-in for CFG++ guidance: the guided prediction is the class-0
// posterior, the re-noising eps the unconditional one.
class RenoiseDenoiser : public Denoiser {
 public:
  explicit RenoiseDenoiser(GMMDenoiser& d) : d_(d) {}
  const Process& process() const override { return d_.process(); }
  Prediction predict(const torch::Tensor& x, double s, const Cond&) override {
    Cond c;
    c.labels = torch::zeros({x.size(0)}, torch::kInt64);
    Prediction g = d_.predict(x, s, c);
    g.set_renoise_eps(d_.predict(x, s, {}).eps());
    return g;
  }

 private:
  GMMDenoiser& d_;
};

TEST(CfgPP, WithoutGuidanceBitEqualToEuler) {
  for (std::string proc : {"vp", "flow"}) {
    auto p = make_process(proc);
    GMMDenoiser d(test_mixture(), p);
    auto sig = make_schedule("karras", *p, 12);
    auto x = start(64, sig[0], 5, torch::kFloat32);
    EXPECT_TRUE(torch::equal(run("euler-cfg++", d, x, sig), run("euler", d, x, sig))) << proc;
    EXPECT_TRUE(torch::equal(run("euler-a-cfg++", d, x, sig, 9), run("euler-a", d, x, sig, 9))) << proc;
  }
}

TEST(CfgPP, RenoisesWithTheUnconditionalEps) {
  auto p = make_process("flow");
  GMMDenoiser d(test_mixture(), p);
  RenoiseDenoiser g(d);
  const double s = 0.7, sn = 0.4;
  auto x = start(16, s);
  Cond c;
  c.labels = torch::zeros({16}, torch::kInt64);
  auto expect = d.predict(x, s, c).x0() * p->a(sn) + d.predict(x, s, {}).eps() * sn;
  EXPECT_TRUE(torch::allclose(run("euler-cfg++", g, x, {s, sn}), expect, 1e-12, 1e-12));
  EXPECT_FALSE(torch::allclose(run("euler", g, x, {s, sn}), expect, 1e-6, 1e-6));
}

TEST(ClassicSamplers, StochasticAreSeedReproducible) {
  GMMDenoiser d(test_mixture(), make_process("vp"));
  auto sig = make_schedule("karras", d.process(), 10);
  auto x = start(32, sig[0], 4, torch::kFloat32);
  for (std::string name : {"dpm2-a", "er-sde", "euler-a-cfg++"}) {
    EXPECT_TRUE(find_sampler(name).stochastic) << name;
    EXPECT_TRUE(torch::equal(run(name, d, x, sig, 11), run(name, d, x, sig, 11))) << name;
    EXPECT_FALSE(torch::equal(run(name, d, x, sig, 11), run(name, d, x, sig, 12))) << name;
  }
  SamplerOptions churn;
  churn.s_churn = 10;
  EXPECT_TRUE(torch::equal(run("heun", d, x, sig, 11, churn), run("heun", d, x, sig, 11, churn)));
  EXPECT_FALSE(torch::equal(run("heun", d, x, sig, 11, churn), run("heun", d, x, sig, 12, churn)));
}

// Inversion from noised data up to a high level converges to the exact PF-ODE
// solution at the sampler's order, and sampling back returns to the data.
TEST(ClassicSamplers, InversionRoundTrip) {
  for (std::string proc : {"vp", "flow"}) {
    auto p = make_process(proc);
    GMMDenoiser d(test_mixture(), p);
    const double lo = 0.05, hi = proc == "flow" ? 0.99 : 10.0;
    auto x0 = d.mixture().sample(64, at::make_generator<at::CPUGeneratorImpl>(2)).to(torch::kFloat64);
    auto x = p->add_noise(x0, start(64, 1.0, 6), lo);
    auto exact = pf_ode_reference(d, x, lo, hi);
    for (auto& name : kMine) {
      const SamplerInfo& info = find_sampler(name);
      if (!info.invertible) continue;
      std::vector<double> err, trip;
      for (int n : {40, 80}) {
        auto up = lambda_levels(*p, lo, hi, n);
        SamplerRun inv(d, up);
        auto z = run_inversion(info, inv, x.clone());
        err.push_back((z - exact).norm(2, 1).mean().item<double>());
        auto back = run(name, d, z, std::vector<double>(up.rbegin(), up.rend()));
        trip.push_back((back - x).norm(2, 1).mean().item<double>());
      }
      std::string msg = name + " on " + proc + ": inversion errors " + std::to_string(err[0]) + " " +
                        std::to_string(err[1]) + ", round trip " + std::to_string(trip[1]);
      EXPECT_GT(err[0] / err[1], 0.6 * std::pow(2.0, info.order)) << msg;
      EXPECT_LT(err[1], info.order >= 2 ? 1e-2 : 0.3) << msg;
      EXPECT_LT(trip[1], info.order >= 2 ? 2e-4 : 0.05) << msg;
    }
  }
}

TEST(ClassicSamplers, FiniteFromFlowLimitAndToZero) {
  // Every sampler starts at exactly s = 1 on flow and ends at 0, for short and
  // long schedules (the warm-up and final steps overlap when steps are few).
  for (std::string proc : {"flow", "vp"}) {
    auto p = make_process(proc);
    GMMDenoiser d(test_mixture(), p);
    for (int steps : {1, 2, 3, 4, 5, 12}) {
      auto sig = make_schedule("karras", *p, steps);
      if (proc == "flow") EXPECT_EQ(sig[0], 1.0);
      auto x = start(64, sig[0], 8, torch::kFloat32);
      for (auto& name : kMine) {
        auto out = run(name, d, x, sig);
        EXPECT_TRUE(torch::isfinite(out).all().item<bool>()) << name << " " << proc << " " << steps;
      }
    }
  }
}

// Mean and covariance of 4000 samples from pure noise at 50 Karras steps
// against the mixture's: within 4 standard errors plus a small bias allowance
// for the discretization and, on vp/edm, for starting from noise alone. The
// first-order samplers get 0.1: Euler's own covariance bias at 50 Karras steps
// on this mixture is 0.07 (euler-a's up to 0.11); the others get 0.02.
TEST(ClassicSamplers, ReproduceMixtureMoments) {
  const int64_t n = 4000;
  for (std::string proc : {"vp", "edm", "flow"}) {
    auto p = make_process(proc);
    GMMDenoiser d(test_mixture(), p);
    auto mean = d.mixture().mean(), cov = d.mixture().covariance();
    auto sig = make_schedule("karras", *p, 50);
    auto x = start(n, sig[0], 21, torch::kFloat32);
    for (auto& name : kMine) {
      const bool first_order = name == "euler-cfg++" || name == "euler-a-cfg++" || name == "gradient-estimation";
      const double bias = first_order ? 0.1 : 0.02;
      auto y = run(name, d, x, sig, 31).to(torch::kFloat64);
      auto m = y.mean(0);
      auto c = y - m;
      auto prods = c.unsqueeze(2) * c.unsqueeze(1);  // [n, 2, 2]
      auto cv = prods.sum(0) / (n - 1);
      auto se_m = (cov.diagonal() / n).sqrt();
      auto se_c = prods.std(0) / std::sqrt(double(n));
      auto dm = (m - mean).abs(), dc = (cv - cov).abs();
      EXPECT_TRUE((dm < se_m * 4 + bias).all().item<bool>())
          << name << " on " << proc << ": mean " << m << " vs " << mean;
      EXPECT_TRUE((dc < se_c * 4 + bias).all().item<bool>())
          << name << " on " << proc << ": covariance " << cv << " vs " << cov;
    }
  }
}

}  // namespace
