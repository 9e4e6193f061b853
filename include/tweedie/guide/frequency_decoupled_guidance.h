// Frequency-Decoupled Guidance (Sadat et al. 2025, "Guidance in the Frequency
// Domain Enables High-Fidelity Sampling at Low CFG Scales"), a CFG variant on
// the denoised estimates: both branches are split into the bands of a
// Laplacian pyramid, each band is guided with its own scale, and the bands
// are summed back:
//   x0 = P^-1( b_k(x0_neg) + w_k (b_k(x0_cond) - b_k(x0_neg)), k = 0..L-1 )
// where b_0 is the finest band and b_{L-1} the coarsest (the low-pass rest).
// The paper's finding: low-frequency guidance sets global structure and
// prompt alignment, high-frequency guidance detail; a low scale on the low
// band keeps colours and diversity while a high one on the fine band keeps
// the quality high (w_high 10, w_low 5 for SDXL).
//
// Here the finest band takes the CFG scale w (--cfg), the coarser bands the
// scales listed in --fdg (finest to coarsest), so `--cfg 10 --fdg 5` is the
// paper's two-level setting. A CFG scale schedule or interval scales every
// band alike: w_k(s) = 1 + (w_k - 1) (w(s) - 1) / (w - 1). Optionally each
// band's update is split into its part parallel to the band of x0_cond and
// the rest, the parallel part weighted by eta (APG's projection, apg.h, per
// band; eta = 1 is off).
//
// The pyramid: G_0 = x, G_{k+1} = down(G_k) with down = 5-tap binomial blur
// ([1 4 6 4 1] / 16 per axis, reflected edges) and 2x2 average pooling
// (ceil for odd sizes); bands b_k = G_k - up(G_{k+1}) with up = bilinear
// resize to G_k's size then the same blur; b_{L-1} = G_{L-1}. The sum back
// (G_k = b_k + up(G_{k+1})) is exact, the operator is linear, so with every
// w_k = w this is CFG exactly, and x0, eps or v give the same result.
// Verified in tests/test_guidance.cpp (FDG*).
#pragma once
#include <vector>

#include "tweedie/guide/cfg.h"

namespace tweedie {

// The bands of x [N, C, H, W], finest first (levels >= 1; levels = 1 is x).
std::vector<torch::Tensor> laplacian_pyramid(const torch::Tensor& x, int levels);
// The image whose bands these are.
torch::Tensor from_laplacian_pyramid(const std::vector<torch::Tensor>& bands);

struct FDGOptions {
  std::vector<double> lower_scales;  // w_1..w_{L-1}: the coarser bands' scales (w_0 is the CFG scale)
  double parallel = 1.0;             // eta: weight of each band update's part parallel to x0_cond's band
};

class FDGDenoiser : public CFGDenoiser {
 public:
  FDGDenoiser(DenoiserPtr inner, CFGOptions cfg, FDGOptions fdg);

 protected:
  torch::Tensor combine(const torch::Tensor& x0_cond, const torch::Tensor& x0_neg, double w, const torch::Tensor& x,
                        double s) override;

 private:
  double scale_;  // the CFG scale the schedule is relative to
  FDGOptions fdg_;
};

}  // namespace tweedie
