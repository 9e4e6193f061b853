// SEG, smoothed energy guidance (Hong 2024, "Smoothed Energy Guidance:
// Guiding Diffusion Models with Reduced Energy Curvature of Attention"): like
// PAG (pag.h), guidance away from a branch with weakened self-attention,
//   x0 = x0(neg) + w (x0(c) - x0(neg)) + s_seg (x0(c) - x0_seg(c)),
// where the weak branch blurs the attention's queries over the token grid
// with a 2D Gaussian of std sigma (which smooths the attention energy
// landscape); sigma = inf replaces every query by the mean query (uniform
// attention over the keys, the paper's default). It runs as PAG's batched
// call with the perturbation on the ".q" hook site ([B, heads, L, d]).
// Verified in tests/test_guidance.cpp (SEG*).
#pragma once
#include "tweedie/guide/pag.h"

namespace tweedie {

// q [B, heads, L, d] with rows [first, B) blurred over the L = h x w token
// grid (h x w with the aspect of an image height x width): Gaussian of std
// sigma with a ceil(6 sigma) + 1 (odd) tap kernel, reflect padding, the
// kernel capped at the grid; sigma = inf: the mean over the tokens.
torch::Tensor blur_queries(const torch::Tensor& q, int64_t batch, int64_t first, double sigma, int64_t height,
                           int64_t width);

// The SEG perturbation for PAGOptions::perturbation.
AttentionPerturbation seg_perturbation(double sigma);

}  // namespace tweedie
