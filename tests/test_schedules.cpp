// Step schedules: closed forms and published tables, the timestep spacings,
// the shift, and validity of every schedule on every process.
#include <gtest/gtest.h>

#include "testing.h"
#include "tweedie/core/error.h"

using namespace tweedie;

namespace {

std::vector<std::string> all_processes() { return {"vp", "vp+ztsnr", "vp-cont", "ve", "edm", "flow"}; }

// Training timesteps of a schedule's nonzero levels (discrete VP).
std::vector<double> timesteps(const Process& p, const std::vector<double>& s) {
  std::vector<double> t;
  for (size_t i = 0; i + 1 < s.size(); ++i) t.push_back(p.t_of(s[i]));
  return t;
}

void expect_rel(const std::vector<double>& got, const std::vector<double>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    if (want[i] == 0)
      EXPECT_EQ(got[i], 0.0) << what << " at " << i;
    else
      EXPECT_NEAR(got[i] / want[i], 1.0, tol) << what << " at " << i << ": " << got[i] << " vs " << want[i];
  }
}

TEST(Schedules, KarrasIsEquation5) {
  for (std::string spec : {"vp", "edm", "flow"}) {
    auto p = make_process(spec);
    for (int n : {1, 5, 10}) {
      for (double rho : {0.0, 3.0}) {
        ScheduleOptions o;
        o.rho = rho;
        const double r = rho > 0 ? rho : 7.0, hi = std::pow(p->s_max(), 1 / r), lo = std::pow(p->s_min(), 1 / r);
        std::vector<double> want;
        for (int i = 0; i < n; ++i) want.push_back(std::pow(hi + (n == 1 ? 0.0 : double(i) / (n - 1)) * (lo - hi), r));
        want.push_back(0);
        expect_rel(make_schedule("karras", *p, n, o), want, 1e-12, "karras " + spec);
      }
    }
  }
}

// Sigma-space schedules start at min(s_max, 80) unless --sigma-max is given;
// timestep spacings keep the whole table (the cosine VP table reaches 20291).
TEST(Schedules, SigmaSpaceSchedulesStartAtEdmSigmaMax) {
  auto cosine = make_process("vp:cosine"), sd = make_process("vp");
  ASSERT_GT(cosine->s_max(), 1000.0);
  ASSERT_LT(sd->s_max(), 80.0);
  for (std::string name : {"karras", "exponential", "kl-optimal", "bong-tangent"}) {
    EXPECT_NEAR(make_schedule(name, *cosine, 10).front(), 80.0, 1e-9) << name;
    EXPECT_NEAR(make_schedule(name, *sd, 10).front(), sd->s_max(), 1e-9 * sd->s_max()) << name;
    ScheduleOptions o;
    o.s_max = 500;
    EXPECT_NEAR(make_schedule(name, *cosine, 10, o).front(), 500.0, 1e-9) << name;
  }
  EXPECT_NEAR(make_schedule("trailing", *cosine, 10).front(), cosine->s_max(), 1e-6 * cosine->s_max());
}

TEST(Schedules, ExponentialIsLogUniform) {
  auto p = make_process("edm");
  auto s = make_schedule("exponential", *p, 8);
  for (int i = 0; i < 8; ++i)
    EXPECT_NEAR(std::log(s[i]), std::log(80.0) + i / 7.0 * (std::log(0.002) - std::log(80.0)), 1e-12);
  EXPECT_EQ(s[8], 0.0);
  ScheduleOptions o;
  o.rho = 1;
  expect_rel(make_schedule("polyexponential", *p, 8, o), s, 1e-12, "polyexponential rho 1");
}

TEST(Schedules, TimestepSpacings) {
  auto p = make_process("vp");
  auto t = timesteps(*p, make_schedule("trailing", *p, 10));
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(t[i], 999 - 100 * i, 1e-6);
  t = timesteps(*p, make_schedule("leading", *p, 10));
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(t[i], 901 - 100 * i, 1e-6);
  auto s = make_schedule("linspace", *p, 10);
  EXPECT_NEAR(s[0], p->s_max(), 1e-12);
  EXPECT_NEAR(s[9], p->s_min(), 1e-12);
  EXPECT_EQ(s[10], 0.0);
  t = timesteps(*p, make_schedule("lcm", *p, 4));
  std::vector<double> lcm4 = {999, 759, 499, 259};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(t[i], lcm4[i], 1e-6);
  EXPECT_THROW(make_schedule("lcm", *p, 51), Error);
  // smoothstep: timesteps round(999 u^2 (3 - 2u)), u = 1 - i/n.
  t = timesteps(*p, make_schedule("smoothstep", *p, 10));
  for (int i = 0; i < 10; ++i) {
    const double u = 1 - i / 10.0;
    EXPECT_NEAR(t[i], std::round(999 * u * u * (3 - 2 * u)), 1e-6) << i;
  }
}

TEST(Schedules, AlignYourStepsTables) {
  auto p = make_process("vp");
  std::vector<double> sd15 = {14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
                              0.9642583904,  0.6523686016, 0.3977456272, 0.1515232662, 0};
  std::vector<double> sdxl = {14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141,
                              0.5550693289,  0.3798540708, 0.2332364134, 0.1114188177, 0};
  expect_rel(make_schedule("ays", *p, 10), sd15, 1e-9, "ays");
  expect_rel(make_schedule("ays-sdxl", *p, 10), sdxl, 1e-9, "ays-sdxl");
  // 20 steps: log-linear interpolation, so the even levels are the table's.
  auto s20 = make_schedule("ays", *p, 20);
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(s20[2 * i] / sd15[i], 1.0, 1e-9) << i;
  EXPECT_NEAR(s20[1], std::sqrt(sd15[0] * sd15[1]), 1e-9);
  // Other processes: same fraction of model time, so the ends are s_max and the terminal 0.
  for (std::string spec : {"edm", "flow", "vp-cont"}) {
    auto q = make_process(spec);
    auto s = make_schedule("ays", *q, 10);
    EXPECT_NEAR(s[0] / q->s_max(), 1.0, 1e-9) << spec;
  }
}

TEST(Schedules, GITSTables) {
  auto p = make_process("vp");
  // ComfyUI nodes_gits.py, coefficient 1.20, 10 steps, last level set to 0.
  std::vector<double> row = {14.61464119, 5.85520077, 2.84484982, 1.67050016, 1.08895338, 0.74807048,
                             0.50118381,  0.32104823, 0.19894916, 0.09824532, 0};
  expect_rel(make_schedule("gits", *p, 10), row, 1e-4, "gits 1.20/10");
  ScheduleOptions o;
  o.own.set("gits-coeff", 0.80);
  expect_rel(make_schedule("gits", *p, 2, o), {14.61464119, 7.49001646, 0}, 1e-4, "gits 0.80/2");
  o.own.set("gits-coeff", 1.50);
  expect_rel(make_schedule("gits", *p, 20, o),
             {14.61464119, 2.45070267, 1.41535246, 0.95350921, 0.72133851, 0.57119018, 0.4783645,
              0.43325692,  0.38853383, 0.36617002, 0.34370604, 0.32104823, 0.29807833, 0.27464288,
              0.25053367,  0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0},
             1e-4, "gits 1.50/20");
  // More than 20 steps interpolate the 20-step row: 40 steps put its levels at even positions.
  auto s40 = make_schedule("gits", *p, 40, o), s20 = make_schedule("gits", *p, 20, o);
  for (int i = 0; i < 20; ++i) EXPECT_NEAR(s40[2 * i] / s20[i], 1.0, 1e-9) << i;
  o.own.set("gits-coeff", 0.83);
  EXPECT_THROW(make_schedule("gits", *p, 10, o), Error);
  o.own.set("gits-coeff", 1.55);
  EXPECT_THROW(make_schedule("gits", *p, 10, o), Error);
  try {
    make_schedule("gits", *p, 1);
    ADD_FAILURE() << "gits accepted 1 step";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("2 steps"), std::string::npos) << e.what();
  }
}

TEST(Schedules, KLOptimalClosedForm) {
  for (std::string spec : {"vp", "edm", "ve"}) {
    auto p = make_process(spec);
    const int n = 12;
    std::vector<double> want;
    for (int i = 0; i < n; ++i) {
      const double r = double(i) / (n - 1);
      want.push_back(std::tan((1 - r) * std::atan(p->s_max()) + r * std::atan(p->s_min())));
    }
    want.push_back(0);
    expect_rel(make_schedule("kl-optimal", *p, n), want, 1e-12, "kl-optimal " + spec);
  }
  // Flow: applied to sigma = t/(1-t); t = 1 maps to atan = pi/2.
  auto f = make_process("flow");
  auto s = make_schedule("kl-optimal", *f, 6);
  EXPECT_EQ(s[0], 1.0);
  for (int i = 1; i < 6; ++i) {
    const double r = i / 5.0, sig = std::tan((1 - r) * M_PI / 2 + r * std::atan(1e-3 / (1 - 1e-3)));
    EXPECT_NEAR(s[i], sig / (1 + sig), 1e-12) << i;
  }
}

TEST(Schedules, BetaQuantiles) {
  auto p = make_process("vp");
  // Beta(2, 1) has CDF x^2, so the quantile of 1 - i/n is sqrt(1 - i/n).
  ScheduleOptions o;
  o.own.set("beta-a", 2).set("beta-b", 1);
  auto t = timesteps(*p, make_schedule("beta", *p, 10, o));
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(t[i], std::nearbyint(999 * std::sqrt(1 - i / 10.0)), 1e-6) << i;
  // Beta(1, 2): CDF 1 - (1-x)^2, quantile 1 - sqrt(i/n).
  o.own.set("beta-a", 1).set("beta-b", 2);
  t = timesteps(*p, make_schedule("beta", *p, 8, o));
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(t[i], std::nearbyint(999 * (1 - std::sqrt(i / 8.0))), 1e-6) << i;
  // Beta(a, a) is symmetric: t_i + t_{n-i} = 999, and the middle is 999/2 rounded to even.
  for (double a : {0.6, 0.3, 2.5}) {
    ScheduleOptions q;
    q.own.set("beta-a", a).set("beta-b", a);
    for (int n : {10, 16}) {
      t = timesteps(*p, make_schedule("beta", *p, n, q));
      EXPECT_NEAR(t[0], 999, 1e-6);
      for (int i = 1; i < n; ++i)
        if (2 * i != n) EXPECT_NEAR(t[i] + t[n - i], 999, 1e-6) << a << " " << n << " " << i;
      EXPECT_NEAR(t[n / 2], 500, 1e-6);
    }
  }
  // Many steps: rounding would repeat timesteps; none is lost.
  auto s = make_schedule("beta", *p, 600);
  EXPECT_EQ(s.size(), 601u);
  t = timesteps(*p, s);
  for (double v : t) EXPECT_NEAR(v, std::round(v), 1e-6);
  ScheduleOptions bad;
  bad.own.set("beta-a", 0);
  EXPECT_EQ(tweedie::testing::error_of([&] { make_schedule("beta", *p, 10, bad); }), "schedule 'beta': --beta-a must be > 0 (got 0)");
  EXPECT_EQ(tweedie::testing::error_of([&] { make_schedule("karras", *p, 10, bad); }), "schedule 'karras': --beta-a does not apply");
}

TEST(Schedules, BongTangentReference) {
  // RES4LYF bong_tangent_scheduler evaluated in float64 (start = s_max,
  // middle = their mean, end = s_min), final level replaced by 0.
  auto p = make_process("vp");
  expect_rel(make_schedule("bong-tangent", *p, 10),
             {14.614641229333646, 14.294417469504907, 13.85518898882768, 13.219058177766417, 12.227948227396926,
              10.528293418520287, 7.321904193742682, 3.7839028809551287, 1.7423851935926764, 0.6602098519596061, 0},
             1e-12, "bong-tangent 10");
  expect_rel(make_schedule("bong-tangent", *p, 2), {14.614641229333646, 7.321904193742682, 0}, 1e-12,
             "bong-tangent 2");
  expect_rel(make_schedule("bong-tangent", *p, 1), {7.321904193742682, 0}, 1e-12, "bong-tangent 1");
}

TEST(Schedules, FlowShift) {
  auto p = make_process("flow");
  auto s = make_schedule("flow-shift", *p, 8);
  for (int i = 0; i < 8; ++i) EXPECT_DOUBLE_EQ(s[i], 1 - i / 8.0);
  // Any process: uniform in t = sigma / (1 + sigma), from t(s_max).
  auto v = make_process("vp");
  s = make_schedule("flow-shift", *v, 5);
  const double tmax = v->s_max() / (1 + v->s_max());
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(s[i] / (1 + s[i]), tmax * (1 - i / 5.0), 1e-12);
}

// shift = 3 on flow is SD3's t -> 3t / (1 + 2t), for every schedule.
TEST(Schedules, ShiftOnFlowIsSD3Shift) {
  auto p = make_process("flow");
  ScheduleOptions o;
  o.shift = 3;
  for (auto& info : schedules()) {
    auto plain = make_schedule(info.name, *p, 10), shifted = make_schedule(info.name, *p, 10, o);
    for (size_t i = 0; i < plain.size(); ++i)
      EXPECT_NEAR(shifted[i], 3 * plain[i] / (1 + 2 * plain[i]), 1e-12) << info.name << " at " << i;
  }
}

// Every schedule on every process: steps + 1 finite levels, strictly
// decreasing, ending at 0, starting within the process's limit and near or
// below its s_max. The only refusal is GITS below its table's 2 steps.
TEST(Schedules, EveryScheduleEveryProcess) {
  for (auto& info : schedules()) {
    for (auto& spec : all_processes()) {
      auto p = make_process(spec);
      for (int n : {1, 2, 5, 10, 20, 50}) {
        std::string what = info.name + " on " + spec + " with " + std::to_string(n) + " steps";
        if (info.name == "gits" && n < 2) {
          EXPECT_THROW(make_schedule(info.name, *p, n), Error) << what;
          continue;
        }
        std::vector<double> s;
        try {
          s = make_schedule(info.name, *p, n);
        } catch (const Error& e) {
          ADD_FAILURE() << what << ": " << e.what();
          continue;
        }
        ASSERT_EQ(s.size(), size_t(n + 1)) << what;
        EXPECT_EQ(s.back(), 0.0) << what;
        for (int i = 0; i < n; ++i) {
          EXPECT_TRUE(std::isfinite(s[i])) << what;
          EXPECT_GT(s[i], s[i + 1]) << what << " at " << i;
        }
        EXPECT_LE(s[0], p->s_limit()) << what;
        EXPECT_LE(s[0], p->s_max() * (1 + 1e-9)) << what;
      }
    }
  }
}

TEST(Schedules, BadInputsAreErrors) {
  auto p = make_process("vp");
  EXPECT_THROW(make_schedule("karras", *p, 0), Error);
  EXPECT_THROW(make_schedule("karras", *p, -3), Error);
  ScheduleOptions o;
  o.rho = -1;
  EXPECT_THROW(make_schedule("karras", *p, 10, o), Error);
  ScheduleOptions sh;
  sh.shift = 0;
  EXPECT_THROW(make_schedule("karras", *p, 10, sh), Error);
  EXPECT_THROW(make_schedule("no-such-schedule", *p, 10), Error);
}

}  // namespace
