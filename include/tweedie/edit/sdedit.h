// SDEdit (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with
// Stochastic Differential Equations", ICLR): noise the input to strength t0
// and denoise it under the target condition with any sampler. See sdedit.cpp.
#pragma once
#include <string>
#include <vector>

#include "tweedie/sample/sampler.h"

namespace tweedie {

struct SDEditOptions {
  double strength = 0.5;        // t0 in [0, 1]: the last round(t0 * steps) steps of the schedule
  std::string sampler = "ddim";
  SamplerOptions sampler_options;
  StepCallback callback;        // per step of the sampler run (progress, previews)
};

// x [N, ...] (data), sigmas a sampling schedule ending at 0, d the denoiser
// (guided as the caller wishes) and the target condition. The noise comes
// from gen (first, then the sampler's own draws). Error for a strength
// outside [0, 1].
torch::Tensor sdedit(Denoiser& d, const std::vector<double>& sigmas, const torch::Tensor& x, const Cond& target,
                     const SDEditOptions& o, torch::Generator gen);

}  // namespace tweedie
