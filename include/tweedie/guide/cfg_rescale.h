// CFG-rescale (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample
// Steps are Flawed", Sec. 3.4). Large guidance scales inflate the standard
// deviation of the guided prediction (over-exposed, over-saturated images);
// the rescale restores the conditional prediction's standard deviation,
// mixed with factor phi:
//   x_rescaled = x_cfg * std(x_cond) / std(x_cfg)
//   x_final    = phi * x_rescaled + (1 - phi) * x_cfg
// with std per sample over all non-batch dimensions (as diffusers'
// rescale_noise_cfg). CFGDenoiser applies it to the guided x0, not to the
// network's raw output as diffusers does (eps for SD 1.x, v in the paper):
// x0 is the quantity whose statistics the paper corrects (the image's
// brightness and contrast), and rescaling it gives the same answer whatever
// parameterization the model was trained with. (std is not affine, so the
// rescale of eps, v and x0 are three different rules; on a v-model at high
// noise v ~ -x0 and the two nearly agree.)
#pragma once
#include <torch/types.h>

namespace tweedie {

// guided, cond: [N, ...]; phi in [0, 1]. Samples whose guided std is 0 are
// left unchanged.
torch::Tensor cfg_rescale(const torch::Tensor& guided, const torch::Tensor& cond, double phi);

}  // namespace tweedie
