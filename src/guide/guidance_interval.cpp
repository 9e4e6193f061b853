// Guidance interval (Kynkäänniemi et al. 2024, "Applying Guidance in a
// Limited Interval Improves Sample and Distribution Quality in Diffusion
// Models"): w(s) = w for sigma_lo < s <= sigma_hi, else 1 (the conditional
// model, one branch). Verified in tests/test_guidance.cpp: an interval
// covering every level is plain CFG bit for bit, outside it the prediction is
// the conditional model's and a counting wrapper sees one N-row call instead
// of one 2N-row call, and the boundaries are (lo, hi].
#include "tweedie/guide/guidance_interval.h"

#include "tweedie/core/error.h"

namespace tweedie {

void GuidanceInterval::validate() const {
  check(std::isfinite(lo) && !std::isnan(hi), "guidance interval (", lo, ", ", hi, "]: bounds must be numbers");
  check(lo >= 0, "guidance interval (", lo, ", ", hi, "]: the lower bound must be >= 0");
  check(lo < hi, "guidance interval (", lo, ", ", hi, "]: the lower bound must be below the upper one");
}

}  // namespace tweedie
