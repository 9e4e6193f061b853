// Restoration baselines without a denoiser, registered as solvers so that
// `tweedie restore --solver` and `tweedie bench restore` treat them alike
// (RestoreSolverInfo::baseline: no steps, no NFE, the start state ignored):
//   pinv     A^+ y, the minimum-norm least-squares solution (Operator::pinv;
//            truncated where the operator has a cutoff)
//   bicubic  bicubic interpolation of the low-resolution y back to full size
//            (torch's upsample_bicubic2d: Keys a = -0.75, half-pixel centres,
//            replicated borders), super-resolution operators only
//            (Operator::sr_factor)
// Tikhonov is in tikhonov.cpp.
// Verified (tests/test_restore.cpp): pinv is Operator::pinv; bicubic maps a
// constant and a linear ramp (away from the borders) to themselves and is
// rejected for other operators.
#include "tweedie/core/error.h"
#include "tweedie/restore/solver.h"

namespace tweedie {
namespace {

torch::Tensor pinv(SamplerRun&, const Measurement& m, torch::Tensor x, const MethodValues&) {
  return m.op->pinv(m.y.to(x.options()));
}

torch::Tensor bicubic(SamplerRun&, const Measurement& m, torch::Tensor x, const MethodValues&) {
  const int64_t f = m.op->sr_factor();
  check(f > 0, "bicubic works on super-resolution operators only, not on '", m.op->name(), "'");
  const auto& s = m.op->in_shape();
  return torch::upsample_bicubic2d(m.y.to(x.options()), {s[1], s[2]}, false);
}

RestoreSolverRegistrar reg1(RestoreSolverInfo{"pinv", "baseline: the pseudo-inverse A^+ y", "Moore-Penrose", pinv}
                                .as_baseline());
RestoreSolverRegistrar reg2(RestoreSolverInfo{"bicubic", "baseline: bicubic upsampling of y (super-resolution only)",
                                              "Keys 1981", bicubic}
                                .as_baseline());

}  // namespace
}  // namespace tweedie
