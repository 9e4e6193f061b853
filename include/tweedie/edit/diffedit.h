// DiffEdit (Couairon, Verbeek, Schwenk & Cord 2023, "DiffEdit: Diffusion-based
// Semantic Image Editing with Mask Guidance", ICLR): a mask from where the
// model's noise estimates under the source and target conditions disagree,
// then DDIM encoding and a masked decoding under the target. See diffedit.cpp.
#pragma once
#include <string>
#include <vector>

#include "tweedie/models/denoiser.h"

namespace tweedie {

struct DiffEditOptions {
  double strength = 0.5;        // encoding ratio r: the last round(r * steps) steps
  double mask_strength = 0.5;   // noise level of the mask: this fraction of the training timesteps
  int mask_samples = 10;        // noise draws the mask averages over
  double clamp_ratio = 3.0;     // the mask is divided by this times its mean and clipped at 1 (extreme values)
  double threshold = 0.5;       // of the mask so normalised to [0, 1]
  std::string sampler = "ddim"; // invertible sampler for encoding and decoding
  double cfg = 1.0;             // guidance scale of the decoding (the mask and the encoding use w = 1)
};

// The edit mask [N, 1, H, W] for images (channels averaged) or [N, ...] like x
// otherwise, float 0/1, from model's noise estimates (draws from gen).
torch::Tensor diffedit_mask(Denoiser& model, const torch::Tensor& x, const Cond& source, const Cond& target,
                            const DiffEditOptions& o, torch::Generator gen);

struct DiffEditResult {
  torch::Tensor edited;  // float64, at the schedule's lowest positive level (inversion.h)
  torch::Tensor mask;
};
DiffEditResult diffedit(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x,
                        const Cond& source, const Cond& target, const DiffEditOptions& o, torch::Generator gen);

}  // namespace tweedie
