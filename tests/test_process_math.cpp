// Process algebra: model time round trips, log-SNR, shifts, tables, and the
// agreement of VP, EDM and flow forms where the math says they must agree.
#include <gtest/gtest.h>

#include "testing.h"
#include "tweedie/core/error.h"

using namespace tweedie;
using namespace tweedie::testing;

namespace {

TEST(ProcessMath, ModelTimeRoundTrips) {
  for (auto name : {"vp", "vp:linear", "vp:cosine", "vp+ztsnr", "vp-cont", "vp-cont:cosine", "ve", "edm", "flow"}) {
    auto p = make_process(name);
    for (double f : {0.0, 0.13, 0.5, 0.91, 1.0}) {
      double s = std::exp(std::log(p->s_min()) + f * (std::log(p->s_max()) - std::log(p->s_min())));
      EXPECT_NEAR(p->s_of(p->t_of(s)), s, 1e-8 * s) << name << " s=" << s;
    }
    EXPECT_LT(p->s_min(), p->s_max()) << name;
  }
}

TEST(ProcessMath, LambdaInverts) {
  for (auto name : {"vp", "flow"}) {
    auto p = make_process(name);
    for (double s : {0.01, 0.3, 0.9}) EXPECT_NEAR(p->s_of_lambda(p->lambda(s)), s, 1e-12);
  }
  auto f = make_process("flow");
  EXPECT_EQ(f->lambda(1.0), -INFINITY);
  EXPECT_EQ(f->s_of_lambda(-INFINITY), 1.0);
}

TEST(ProcessMath, ZeroTerminalSNRRescale) {
  VPDiscreteConfig c;
  c.zero_terminal_snr = true;
  auto ab = alphas_cumprod(c), ab0 = alphas_cumprod({});
  EXPECT_EQ(ab.back(), 0.0);
  EXPECT_NEAR(ab.front(), ab0.front(), 1e-15);  // first unchanged
  // sqrt(abar) is an affine function of the original sqrt(abar)
  double k = (std::sqrt(ab[500]) - std::sqrt(ab[999])) / (std::sqrt(ab0[500]) - std::sqrt(ab0[999]));
  EXPECT_NEAR(std::sqrt(ab[200]), k * (std::sqrt(ab0[200]) - std::sqrt(ab0[999])), 1e-12);
  EXPECT_NEAR(make_process("vp+ztsnr")->s_max(), std::sqrt((1 - 4.8973451890853435e-08) / 4.8973451890853435e-08), 1e-6);
}

TEST(ProcessMath, CosineTableIsClipped) {
  VPDiscreteConfig c;
  c.betas = BetaSchedule::Cosine;
  auto ab = alphas_cumprod(c);
  for (int i = 1; i < 1000; ++i) EXPECT_LE(1 - ab[i] / ab[i - 1], 0.999 + 1e-12);
}

TEST(ProcessMath, FlowShiftIsALogSNRShift) {
  auto p = make_process("flow");
  for (double t : {0.1, 0.5, 0.9}) EXPECT_NEAR(p->shift_lambda(t, -std::log(3.0)), 3 * t / (1 + 2 * t), 1e-12);
  auto v = make_process("vp");
  EXPECT_NEAR(v->shift_lambda(2.0, -std::log(2.0)), 4.0, 1e-12);  // VE sigma scales by the shift
}

TEST(ProcessMath, AncestralStepPreservesMarginals) {
  // For every process, scale^2 (a_down^2 v + s_down^2) + noise^2 must equal the
  // marginal a'^2 v + s'^2 for any data variance v (both the x0 and eps parts).
  for (auto name : {"vp", "flow"}) {
    auto p = make_process(name);
    for (double eta : {0.3, 1.0}) {
      double s = p->space() == Space::Flow ? 0.8 : 3.0, sn = p->space() == Space::Flow ? 0.4 : 1.2;
      auto st = p->ancestral_step(s, sn, eta);
      EXPECT_NEAR(st.scale * p->a(st.s_down), p->a(sn), 1e-12) << name;
      EXPECT_NEAR(st.scale * st.scale * st.s_down * st.s_down + st.noise * st.noise, sn * sn, 1e-12) << name;
    }
  }
}

TEST(ProcessMath, ExactODEAgreesAcrossProcesses) {
  // The PF-ODE of a Gaussian mixture is one curve in log-SNR; VP(VE-space),
  // EDM and flow states at the same lambda are the same point up to the scale a.
  auto vp = make_process("edm"), fl = make_process("flow");
  GMMDenoiser dv(test_mixture(), vp), df(test_mixture(), fl);
  torch::manual_seed(3);
  auto l0 = vp->lambda(5.0), l1 = vp->lambda(0.05);
  double sf0 = fl->s_of_lambda(l0), sf1 = fl->s_of_lambda(l1);
  auto xv = torch::randn({16, 2}, torch::kFloat64) * 5.0;
  auto xf = xv * fl->a(sf0);
  auto ev = pf_ode_reference(dv, xv, 5.0, 0.05), ef = pf_ode_reference(df, xf, sf0, sf1);
  EXPECT_LT((ev * fl->a(sf1) - ef).abs().max().item<double>(), 1e-6);
}

TEST(ProcessMath, UnknownProcessNamesTheSpec) {
  try {
    make_process("vq");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'vq'"), std::string::npos);
  }
  EXPECT_THROW(make_process("edm+ztsnr"), Error);
}

}  // namespace

namespace {

TEST(ProcessMath, ExponentialIntegratorsAreInvariantAcrossProcesses) {
  // DDIM, DPM-Solver++ and UniPC depend on the process only through lambda, so
  // on EDM and flow with levels at the same log-SNR they take the same steps:
  // the flow state is the VE state times a(s).
  auto ve = make_process("edm"), fl = make_process("flow");
  GMMDenoiser dv(test_mixture(), ve), df(test_mixture(), fl);
  std::vector<double> sv = karras_levels(20.0, 0.05, 12), sf;
  for (double s : sv) sf.push_back(fl->s_of_lambda(ve->lambda(s)));
  torch::manual_seed(9);
  auto xv = torch::randn({32, 2}, torch::kFloat64) * sv.front();
  for (auto name : {"ddim", "dpmpp-2m", "unipc-bh2", "dpm-solver-2", "deis"}) {
    SamplerRun rv(dv, sv), rf(df, sf);
    auto ov = run_sampler(find_sampler(name), rv, xv.clone());
    auto of = run_sampler(find_sampler(name), rf, xv * fl->a(sf.front()));
    EXPECT_LT((ov * fl->a(sf.back()) - of).abs().max().item<double>(), 1e-9) << name;
  }
}

}  // namespace
