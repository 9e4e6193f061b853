// CFG-rescale (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample
// Steps are Flawed", Sec. 3.4):
//   x_final = phi * x_cfg * std(x_cond) / std(x_cfg) + (1 - phi) * x_cfg,
// std per sample over all non-batch dimensions; applied to the guided x0
// (cfg_rescale.h says why). Verified in tests/test_guidance.cpp against a
// hand computation and on the Gaussian mixture (phi = 0 is plain CFG; phi = 1
// gives the conditional x0's standard deviation exactly).
#include "tweedie/guide/cfg_rescale.h"

#include "tweedie/core/error.h"

namespace tweedie {

torch::Tensor cfg_rescale(const torch::Tensor& guided, const torch::Tensor& cond, double phi) {
  check(phi >= 0 && phi <= 1, "cfg rescale must be in [0, 1] (got ", phi, ")");
  check(guided.sizes() == cond.sizes(), "cfg rescale: guided ", guided.sizes(), " and conditional ", cond.sizes(),
        " predictions differ in shape");
  if (phi == 0) return guided;
  const int64_t n = guided.size(0);
  // Per-sample std over every non-batch dimension (the Bessel factor cancels in the ratio).
  auto std_of = [n](const torch::Tensor& t) { return t.reshape({n, -1}).std(1, /*unbiased=*/true); };
  auto sg = std_of(guided), sc = std_of(cond);
  auto ratio = torch::where(sg > 0, sc / sg, torch::ones_like(sg));
  std::vector<int64_t> shape(guided.dim(), 1);
  shape[0] = n;
  auto factor = ratio.reshape(shape) * phi + (1 - phi);
  return guided * factor;
}

}  // namespace tweedie
