// Guidance interval (Kynkäänniemi et al. 2024, "Applying Guidance in a
// Limited Interval Improves Sample and Distribution Quality in Diffusion
// Models"): guidance is harmful at high noise (it collapses diversity) and
// unnecessary at low noise, so CFG is applied only for noise levels sigma in
// (lo, hi]; elsewhere the conditional model is used alone, and only its one
// branch is evaluated (CFGDenoiser skips the negative branch where w = 1).
// sigma is the sampling-space noise level s (process.h), which for EDM is the
// paper's sigma.
#pragma once
#include <cmath>

namespace tweedie {

struct GuidanceInterval {
  double lo = 0.0, hi = INFINITY;  // guidance for lo < s <= hi
  bool contains(double s) const { return s > lo && s <= hi; }
  bool everything() const { return lo <= 0.0 && hi == INFINITY; }
  // Error naming the interval unless 0 <= lo < hi.
  void validate() const;
};

// The guidance scale at s: w inside the interval, 1 (no guidance) outside.
inline double interval_cfg_scale(const GuidanceInterval& iv, double w, double s) { return iv.contains(s) ? w : 1.0; }

}  // namespace tweedie
