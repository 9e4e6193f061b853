// Motion-blur operator: a straight line kernel of given length and angle (the
// linear motion blur of camera shake, e.g. the motion-deblurring task of DPS,
// Chung et al. 2023, there with random-trajectory kernels), applied as a
// circular convolution through the FFT (blur.cpp; the kernel is its only
// difference from the Gaussian).
//
// The kernel is the segment {t (cos a, -sin a) : |t| <= L/2} (x to the right,
// y down, so the angle a is counter-clockwise on screen), rasterised by
// splatting 16 L + 1 equally spaced points bilinearly onto the periodic pixel
// grid, made exactly even by averaging with its mirror image, and normalised
// to sum 1. Its transfer function is a sampled sinc along the motion
// direction: real (the kernel is even), with zeros and negative lobes, which
// the SVD's sign handles (blur.cpp) and the cutoff drops.
// Verified (tests/test_restore.cpp): the generic operator identities, the
// kernel's sum, symmetry, length and direction.
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/restore/operator.h"

namespace tweedie {

torch::Tensor motion_blur_kernel(int64_t H, int64_t W, double length, double angle) {
  check(H > 0 && W > 0, "motion blur: image size must be positive (got ", H, "x", W, ")");
  check(std::isfinite(length) && length >= 0, "motion blur: length must be >= 0 pixels (got ", length, ")");
  check(length < double(std::min(H, W)), "motion blur: length ", length, " must be shorter than the image side ",
        std::min(H, W));
  check(std::isfinite(angle), "motion blur: angle must be finite (got ", angle, ")");
  const double rad = angle * M_PI / 180, dx = std::cos(rad), dy = -std::sin(rad);
  const int n = int(std::ceil(16 * length)) + 1;
  std::vector<double> k(size_t(H * W), 0.0);
  auto splat = [&](double py, double px, double w) {
    const double fy = std::floor(py), fx = std::floor(px), ty = py - fy, tx = px - fx;
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 2; ++b) {
        const int64_t iy = ((int64_t(fy) + a) % H + H) % H, ix = ((int64_t(fx) + b) % W + W) % W;
        k[size_t(iy * W + ix)] += w * (a ? ty : 1 - ty) * (b ? tx : 1 - tx);
      }
  };
  for (int j = 0; j < n; ++j) {
    const double t = n == 1 ? 0.0 : length * (double(j) / (n - 1) - 0.5);
    splat(t * dy, t * dx, 1.0);
  }
  auto kt = torch::tensor(k, torch::kFloat64).reshape({H, W});
  kt = (kt + torch::roll(kt.flip({0, 1}), {1, 1}, {0, 1})) / 2;  // exactly even: k(-d) = k(d)
  return kt / kt.sum();
}

OperatorPtr make_motion_blur(const std::vector<int64_t>& in_shape, double length, double angle, double cutoff) {
  check(in_shape.size() == 3, "operators take images [C, H, W], got shape ", c10::IntArrayRef(in_shape));
  return make_circular_blur(in_shape, motion_blur_kernel(in_shape[1], in_shape[2], length, angle), "motion-blur",
                            cutoff);
}

}  // namespace tweedie
