// Dynamic thresholding (Saharia et al. 2022, "Photorealistic Text-to-Image
// Diffusion Models with Deep Language Understanding" (Imagen), Sec. 2.3):
// large guidance scales push the predicted x0 outside the data range [-1, 1];
// static clipping then saturates pixels. Instead, per sample,
//   s  = max(1, quantile(|x0|, p))      (optionally also min(s, max_value))
//   x0 = clamp(x0, -s, s) / s,
// which pushes saturated pixels inward. The quantile is over all non-batch
// elements with linear interpolation (torch.quantile), as in diffusers'
// _threshold_sample; max_value is its sample_max_value (default here: no cap,
// as in the paper; diffusers' default 1 is static clipping).
//
// DynamicThresholdDenoiser applies it to the x0 the sampler sees, so it goes
// outermost, after guidance. eps is recomputed from the thresholded x0 (the
// two stay consistent for every sampler); a renoise eps set by an inner
// CFG++ rule is kept (GuidanceRule carries it).
#pragma once
#include <cmath>

#include "tweedie/guide/guidance_rule.h"
#include "tweedie/models/denoiser.h"

namespace tweedie {

// x0: [N, ...]; p in (0, 1); max_value >= 1.
torch::Tensor dynamic_threshold(const torch::Tensor& x0, double p, double max_value = INFINITY);

class DynamicThresholdDenoiser : public GuidanceRule {
 public:
  DynamicThresholdDenoiser(DenoiserPtr inner, double p, double max_value = INFINITY);

 private:
  Prediction guide(const torch::Tensor& x, double s, const Cond& c) override;
  double p_, max_;
};

}  // namespace tweedie
