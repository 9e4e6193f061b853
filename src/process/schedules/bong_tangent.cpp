// bong_tangent (ClownsharkBatwing's RES4LYF sigmas.py, as in ComfyUI and
// stable-diffusion.cpp BongTangentScheduler): two arctangent ramps, from
// s_max down to the midpoint (s_max + s_min)/2 and from there to s_min, each
//   v(x) = (2/pi atan(-slope (x - pivot)) + 1) / 2,  x = 0..len-1,
// rescaled so that the ramp starts and ends exactly at its endpoints. With
// m = n + 2 points in all: the split is at floor(0.6 m), both pivots at
// floor(0.6 m) (the second counted from the split), slope 0.2 / (m / 40); the
// shared midpoint appears once, and the final s_min is replaced by 0. (One
// step gives [midpoint, 0], as in the reference.) Works in the sampling-space
// level s of any process, like karras and exponential.
// Verified: tests/test_schedules.cpp (strictly decreasing, endpoints, every
// process).
#include <cmath>

#include "tweedie/process/schedule.h"

namespace tweedie {
namespace {

std::vector<double> ramp(int len, double slope, double pivot, double start, double end) {
  auto v = [&](double x) { return ((2 / M_PI) * std::atan(-slope * (x - pivot)) + 1) / 2; };
  const double vmax = v(0), vmin = v(len - 1), range = vmax - vmin;
  std::vector<double> s(len);
  for (int x = 0; x < len; ++x)
    s[x] = std::abs(range) < 1e-12 ? (len == 1 ? start : start + (end - start) * x / (len - 1))
                                   : (v(x) - vmin) / range * (start - end) + end;
  return s;
}

std::vector<double> bong_tangent(const Process& p, int n, const ScheduleOptions& o) {
  const double start = schedule_util::smax_sigma(p, o), end = schedule_util::smin(p, o), middle = end + (start - end) * 0.5;
  const int m = n + 2;
  const int split = int((m * 0.6 + m * 0.6) / 2), pivot = int(m * 0.6);
  const double slope = 0.2 / (m / 40.0);
  const int len2 = m - split, len1 = m - len2;
  std::vector<double> s = ramp(len1, slope, pivot, start, middle);
  s.pop_back();
  for (double v : ramp(len2, slope, pivot - len1, middle, end)) s.push_back(v);
  s.pop_back();  // s_min, replaced by the terminal 0
  return schedule_util::finish(p, s, o);
}

ScheduleRegistrar reg({"bong-tangent", "two arctangent ramps, s_max -> midpoint -> s_min (RES4LYF bong_tangent)",
                       "RES4LYF sigmas.py bong_tangent (ComfyUI, stable-diffusion.cpp)", bong_tangent});

}  // namespace
}  // namespace tweedie
