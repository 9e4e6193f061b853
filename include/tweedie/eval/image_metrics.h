// Full-reference image quality: PSNR and SSIM of restorations against the
// truth, per image, on images scaled to [0, 1] (data range 1).
//
//   PSNR = 10 log10(1 / MSE)  (+inf for identical images)
//   SSIM (Wang, Bovik, Sheikh & Simoncelli 2004, "Image Quality Assessment:
//        From Error Visibility to Structural Similarity"): local means,
//        variances and covariance under an 11 x 11 Gaussian window (sigma 1.5,
//        normalised), over the window positions that fit inside the image
//        ('valid', as the authors' ssim_index.m), with C1 = (0.01)^2, C2 = (0.03)^2:
//          SSIM map = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))
//        averaged over positions and channels.
// Verified (tests/test_restore.cpp): SSIM(x, x) = 1; constant images a, b give
// (2ab + C1)/(a^2 + b^2 + C1); a brute-force window-by-window SSIM; PSNR of a
// known MSE.
#pragma once
#include <torch/types.h>

namespace tweedie {

// a, b: [N, C, H, W] in [0, 1] (not clamped here); H, W >= 11 for SSIM.
// Results [N] float64.
torch::Tensor psnr(const torch::Tensor& a, const torch::Tensor& b);
torch::Tensor ssim(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace tweedie
