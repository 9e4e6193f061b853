// Adaptive Projected Guidance (Sadat et al. 2025, "Eliminating
// Oversaturation and Artifacts of High Guidance Scales in Diffusion
// Models"), a CFG variant on the denoised estimates: the CFG update
// d = x0_cond - x0_neg is
//   1. averaged with negative momentum: d <- d + beta d_prev (beta < 0 pushes
//      away from the previous steps' update; off at beta = 0),
//   2. clipped in norm: d <- d min(1, r / ||d||) (off at r = 0),
//   3. split into its part parallel to x0_cond and the orthogonal rest, the
//      parallel part (which oversaturates) weighted by eta:
//        d_par = (d . u) u, u = x0_cond / ||x0_cond||,  d_orth = d - d_par,
//   x0 = x0_cond + (w - 1) (d_orth + eta d_par)
// with norms and dot products per sample. At eta = 1, beta = 0, r = 0 it is
// CFG exactly. The momentum restarts with each sampling run.
#pragma once
#include "tweedie/guide/cfg.h"

namespace tweedie {

struct APGOptions {
  double eta = 0.0;       // weight of the parallel component, in [0, 1]
  double momentum = 0.0;  // beta in (-1, 1); the paper uses -0.5
  double norm_threshold = 0.0;  // r >= 0; 0 = no clipping
};

// The APG update for one pair of branches (stateless: d already averaged).
torch::Tensor apg_update(const torch::Tensor& diff, const torch::Tensor& x0_cond, double eta, double norm_threshold);

class APGDenoiser : public CFGDenoiser {
 public:
  APGDenoiser(DenoiserPtr inner, CFGOptions cfg, APGOptions apg);

 protected:
  torch::Tensor combine(const torch::Tensor& x0_cond, const torch::Tensor& x0_neg, double w, const torch::Tensor& x,
                        double s) override;

 private:
  APGOptions apg_;
  torch::Tensor running_;  // momentum average of the update
  int last_step_ = -1;
  double last_s_ = 0;
};

}  // namespace tweedie
