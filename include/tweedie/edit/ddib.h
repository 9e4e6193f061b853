// DDIB (Su, Song, Meng & Ermon 2023, "Dual Diffusion Implicit Bridges for
// Image-to-Image Translation", ICLR): invert under the source class with a
// deterministic sampler, decode under the target class. See ddib.cpp.
#pragma once
#include <string>
#include <vector>

#include "tweedie/models/denoiser.h"

namespace tweedie {

struct DDIBOptions {
  double strength = 1.0;        // invert the last round(strength * steps) steps (1: to the top, as the paper)
  std::string sampler = "ddim"; // any invertible sampler, both ways
  double cfg = 1.0;             // guidance scale of the decoding (the encoding runs at w = 1)
};

// x [N, ...], sigmas a sampling schedule ending at 0; the result is the state
// at the schedule's lowest positive level (inversion.h), float64.
torch::Tensor ddib(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x,
                   const Cond& source, const Cond& target, const DDIBOptions& o);

}  // namespace tweedie
