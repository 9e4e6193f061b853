// TCFG, tangential damping classifier-free guidance (Kwon et al. 2025,
// "TCFG: Tangential Damping Classifier-free Guidance"), a CFG variant: the
// unconditional prediction loses its component tangential to the principal
// direction shared by the two branches before CFG combines them. Per sample,
// with e_u, e_c the branches' eps (the score direction) flattened and v1 the
// top right singular vector of the 2 x D matrix [e_u; e_c],
//   e_u' = e_u - d (e_u - (e_u . v1) v1),   eps = e_u' + w (e_c - e_u'),
// d = 1 being the paper's (e_u projected onto v1) and d = 0 plain CFG. When
// the branches are parallel, v1 is their direction and it is CFG at any d.
#pragma once
#include "tweedie/guide/cfg.h"

namespace tweedie {

// e_u with its tangential component damped by d, per sample (float64 inside).
torch::Tensor tangential_damping(const torch::Tensor& eps_cond, const torch::Tensor& eps_uncond, double d);

class TCFGDenoiser : public CFGDenoiser {
 public:
  TCFGDenoiser(DenoiserPtr inner, CFGOptions cfg, double damping);

 protected:
  torch::Tensor combine(const torch::Tensor& x0_cond, const torch::Tensor& x0_neg, double w, const torch::Tensor& x,
                        double s) override;

 private:
  double damping_;
};

}  // namespace tweedie
