// Quantile schedules over the training timesteps.
//
// beta (Lee, Lin & Wang 2024, "Beta Sampling is All You Need: Efficient Image
// Generation Strategy for Diffusion Models using Stepwise Spectral Analysis";
// ComfyUI beta_scheduler): timestep fractions are quantiles of Beta(a, b),
//   f_i = I^-1(1 - i/n; a, b),  i = 0..n-1   (options --beta-a, --beta-b; 0.6),
// which for a, b < 1 crowds steps at both ends of the trajectory. I^-1 is the
// inverse regularized incomplete beta function: I_x(a, b) by its continued
// fraction (modified Lentz), inverted by Newton's method safeguarded with
// bisection to 1e-15 in x.
// smoothstep (stable-diffusion.cpp SmoothStepScheduler, "close to beta"):
//   f_i = u^2 (3 - 2u),  u = 1 - i/n.
//
// Both round f_i (N-1) to a training timestep (N = Process::timesteps(); beta
// rounds half to even like numpy.rint, smoothstep half away from zero like
// std::round) and take its level Process::s_at_timestep. ComfyUI then drops
// repeated timesteps, returning fewer steps than asked; here the rounded
// timesteps are instead made strictly decreasing without losing a step: each
// one is lowered to at most its predecessor - 1, and if that pushes the tail
// below 0 the tail is raised back (t_i >= t_{i+1} + 1 from the end). Where no
// repeats occur the result is exactly the reference one. With more steps than
// training timesteps the fractional timesteps are used unrounded.
// Verified: tests/test_schedules.cpp (Beta(2,1) closed form sqrt, symmetry of
// Beta(a,a), smoothstep closed form, strictly decreasing for every process).
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/process/schedule.h"

namespace tweedie {
namespace {

// Continued fraction for I_x(a, b) (modified Lentz), converging for x < (a+1)/(a+b+2).
double beta_cf(double a, double b, double x) {
  const double tiny = 1e-300;
  auto guard = [&](double v) { return std::abs(v) < tiny ? tiny : v; };
  double c = 1.0, d = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0)), h = d;
  for (int m = 1; m <= 10000; ++m) {
    const double m2 = 2.0 * m;
    double num = m * (b - m) * x / ((a - 1.0 + m2) * (a + m2));  // even term
    d = 1.0 / guard(1.0 + num * d);
    c = guard(1.0 + num / c);
    h *= d * c;
    num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1.0 + m2));  // odd term
    d = 1.0 / guard(1.0 + num * d);
    c = guard(1.0 + num / c);
    const double delta = d * c;
    h *= delta;
    if (std::abs(delta - 1.0) < 1e-16) break;
  }
  return h;
}

double log_beta(double a, double b) { return std::lgamma(a) + std::lgamma(b) - std::lgamma(a + b); }

// Regularized incomplete beta function I_x(a, b).
double inc_beta(double a, double b, double x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const double front = std::exp(a * std::log(x) + b * std::log1p(-x) - log_beta(a, b));
  if (x < (a + 1.0) / (a + b + 2.0)) return front * beta_cf(a, b, x) / a;
  return 1.0 - front * beta_cf(b, a, 1.0 - x) / b;
}

// x with I_x(a, b) = y.
double inv_inc_beta(double a, double b, double y) {
  if (y <= 0) return 0;
  if (y >= 1) return 1;
  if (a == b && y == 0.5) return 0.5;
  const double lb = log_beta(a, b);
  double lo = 0, hi = 1, x = 0.5;
  for (int it = 0; it < 300 && hi - lo > 1e-15; ++it) {
    const double f = inc_beta(a, b, x) - y;
    if (f == 0) return x;
    (f < 0 ? lo : hi) = x;
    const double pdf = std::exp((a - 1) * std::log(x) + (b - 1) * std::log1p(-x) - lb);
    double xn = x - f / pdf;
    if (!(xn > lo && xn < hi)) xn = 0.5 * (lo + hi);  // Newton left the bracket: bisect
    if (std::abs(xn - x) < 1e-15) return xn;
    x = xn;
  }
  return x;
}

// Levels at fractions f (non-increasing, in [0, 1]) of the training timesteps.
std::vector<double> at_timesteps(const Process& p, const std::vector<double>& f, bool half_even,
                                 const ScheduleOptions& o) {
  const int N = p.timesteps(), n = f.size();
  std::vector<double> t(n);
  for (int i = 0; i < n; ++i) t[i] = f[i] * (N - 1);
  if (n <= N) {
    for (int i = 0; i < n; ++i) t[i] = half_even ? std::nearbyint(t[i]) : std::round(t[i]);
    for (int i = 1; i < n; ++i) t[i] = std::min(t[i], t[i - 1] - 1);
    t[n - 1] = std::max(t[n - 1], 0.0);
    for (int i = n - 2; i >= 0; --i) t[i] = std::max(t[i], t[i + 1] + 1);
  }
  std::vector<double> s;
  for (double v : t) s.push_back(p.s_at_timestep(v));
  return schedule_util::finish(p, s, o);
}

std::vector<double> beta(const Process& p, int n, const ScheduleOptions& o) {
  const double a = o.values.number("beta-a"), b = o.values.number("beta-b");
  std::vector<double> f(n);
  for (int i = 0; i < n; ++i) f[i] = inv_inc_beta(a, b, 1.0 - double(i) / n);
  return at_timesteps(p, f, true, o);
}

std::vector<double> smoothstep(const Process& p, int n, const ScheduleOptions& o) {
  std::vector<double> f(n);
  for (int i = 0; i < n; ++i) {
    const double u = 1.0 - double(i) / n;
    f[i] = u * u * (3.0 - 2.0 * u);
  }
  return at_timesteps(p, f, false, o);
}

ScheduleRegistrar reg1(ScheduleInfo{"beta", "timesteps at Beta(a, b) quantiles (a = b = 0.6 by default)",
                                    "Lee et al. 2024, 'Beta Sampling is All You Need' (ComfyUI beta)", beta}
                           .option(MethodOption{"beta-a", 0.6, "beta schedule alpha"}.at_least(0, true))
                           .option(MethodOption{"beta-b", 0.6, "beta schedule beta"}.at_least(0, true)));
ScheduleRegistrar reg2({"smoothstep", "timesteps at smoothstep(1 - i/n) of the training range",
                        "stable-diffusion.cpp SmoothStepScheduler", smoothstep});

}  // namespace
}  // namespace tweedie
