// ILVR (Choi, Kim, Jeong, Gwon & Yoon 2021, "ILVR: Conditioning Method for
// Denoising Diffusion Probabilistic Models", ICCV): sample while replacing
// the low-frequency content of the state with that of a noised reference.
// See ilvr.cpp.
#pragma once
#include <string>
#include <vector>

#include "tweedie/sample/sampler.h"

namespace tweedie {

struct ILVROptions {
  int64_t factor = 4;           // N: the low-pass filter downsamples by N (image sides divisible by N)
  double range = 1.0;           // fraction of the steps (from the top) that are conditioned
  std::string sampler = "ddpm"; // any sampler that continues from the state it reports
  SamplerOptions sampler_options;
};

// Sample from noise [N, C, H, W] (start state sigmas[0] * noise) under
// condition c, with the reference images y [N, C, H, W] (or [1, C, H, W],
// shared). Random draws from gen.
torch::Tensor ilvr(Denoiser& d, const std::vector<double>& sigmas, const torch::Tensor& noise,
                   const torch::Tensor& reference, const Cond& c, const ILVROptions& o, torch::Generator gen);

}  // namespace tweedie
