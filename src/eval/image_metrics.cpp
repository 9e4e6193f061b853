// PSNR and SSIM (image_metrics.h). SSIM's Gaussian-window statistics are one
// depthwise 'valid' convolution of x, y, x^2, y^2 and x y with the separable
// window.
#include "tweedie/eval/image_metrics.h"

#include <cmath>

#include "tweedie/core/error.h"

namespace tweedie {

namespace {
void check_pair(const torch::Tensor& a, const torch::Tensor& b, const char* who) {
  check(a.defined() && b.defined() && a.dim() == 4 && a.sizes() == b.sizes(), who,
        ": expects two image batches [N, C, H, W] of the same shape, got ",
        a.defined() ? c10::str(a.sizes()) : "undefined", " and ", b.defined() ? c10::str(b.sizes()) : "undefined");
}
}  // namespace

torch::Tensor psnr(const torch::Tensor& a, const torch::Tensor& b) {
  check_pair(a, b, "psnr");
  auto mse = (a.to(torch::kFloat64) - b.to(torch::kFloat64)).pow(2).flatten(1).mean(1);
  return -10 * torch::log10(mse);  // +inf where mse = 0
}

torch::Tensor ssim(const torch::Tensor& a, const torch::Tensor& b) {
  check_pair(a, b, "ssim");
  const int64_t win = 11, C = a.size(1);
  check(a.size(2) >= win && a.size(3) >= win, "ssim: images must be at least 11x11 (got ", a.size(3), "x", a.size(2),
        ")");
  const double sigma = 1.5, c1 = 0.01 * 0.01, c2 = 0.03 * 0.03;
  auto g = torch::exp(-(torch::arange(win, torch::kFloat64) - (win - 1) / 2.0).pow(2) / (2 * sigma * sigma));
  g = g / g.sum();
  auto w = torch::outer(g, g).expand({C, 1, win, win}).contiguous();
  auto x = a.to(torch::kFloat64), y = b.to(torch::kFloat64);
  auto mean = [&](const torch::Tensor& t) { return torch::conv2d(t, w, {}, at::IntArrayRef{1}, at::IntArrayRef{0}, at::IntArrayRef{1}, C); };
  auto mx = mean(x), my = mean(y);
  auto vx = mean(x * x) - mx * mx, vy = mean(y * y) - my * my, cxy = mean(x * y) - mx * my;
  auto map = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2));
  return map.flatten(1).mean(1);
}

}  // namespace tweedie
