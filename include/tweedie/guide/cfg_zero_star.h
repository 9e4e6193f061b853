// CFG-Zero* (Fan et al. 2025, "CFG-Zero*: Improved Classifier-Free Guidance
// for Flow Matching Models"), a CFG variant:
//   optimized scale  s* = <p_c, p_u> / ||p_u||^2 per sample,
//   guided          p = s* p_u + w (p_c - s* p_u),
// on the model's flow velocity for flow processes (the paper's setting) and
// on eps otherwise (what diffusers' guider computes for eps models); and
// zero-init: the first K sampler steps predict velocity 0 (the state does
// not move; flow processes only). With s* = 1 and K = 0 it is CFG; at w = 1
// it is the conditional model.
#pragma once
#include "tweedie/guide/cfg.h"

namespace tweedie {

// s* per sample [N] (float64) of the conditional and unconditional predictions.
torch::Tensor cfg_zero_star_scale(const torch::Tensor& cond, const torch::Tensor& uncond);

class CFGZeroStarDenoiser : public CFGDenoiser {
 public:
  // zero_init_steps: K >= 0 (K > 0 needs a flow process).
  CFGZeroStarDenoiser(DenoiserPtr inner, CFGOptions cfg, int zero_init_steps);

 protected:
  torch::Tensor combine(const torch::Tensor& x0_cond, const torch::Tensor& x0_neg, double w, const torch::Tensor& x,
                        double s) override;

 private:
  int zero_init_;
  bool flow_;
};

}  // namespace tweedie
