// A1111's img2img resize modes over Pillow's Lanczos filter (see io/resize.h).
#include "tweedie/io/resize.h"

#include <cmath>
#include <vector>

#include "tweedie/core/error.h"

namespace tweedie {
namespace {

double sinc(double x) {
  if (x == 0) return 1;
  x *= M_PI;
  return std::sin(x) / x;
}
double lanczos3(double x) { return x > -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0; }

// Pillow's precompute_coeffs: the [out, in] weight matrix of one axis.
torch::Tensor lanczos_matrix(int64_t in, int64_t out) {
  const double scale = double(in) / double(out), filterscale = std::max(scale, 1.0), support = 3 * filterscale;
  auto w = torch::zeros({out, in}, torch::kFloat64);
  auto a = w.accessor<double, 2>();
  for (int64_t i = 0; i < out; ++i) {
    const double center = (double(i) + 0.5) * scale;
    const int64_t lo = std::max<int64_t>(0, int64_t(center - support + 0.5));
    const int64_t hi = std::min<int64_t>(in, int64_t(center + support + 0.5));
    double total = 0;
    for (int64_t j = lo; j < hi; ++j) total += (a[i][j] = lanczos3((double(j) - center + 0.5) / filterscale));
    if (total != 0)
      for (int64_t j = lo; j < hi; ++j) a[i][j] /= total;
  }
  return w;
}

}  // namespace

torch::Tensor lanczos_resize_axis(const torch::Tensor& x, int64_t dim, int64_t size) {
  check(size >= 1, "resize: target size must be >= 1, got ", size);
  const int64_t in = x.size(dim);
  if (in == size) return x;
  const torch::Tensor w = lanczos_matrix(in, size).to(x.scalar_type());
  return torch::matmul(w, x.transpose(dim, -2)).transpose(dim, -2);  // along dim
}

torch::Tensor resize_image(const torch::Tensor& img, int64_t height, int64_t width, const std::string& mode) {
  check(img.dim() == 4 && img.is_floating_point(), "resize: expected a float [N, C, H, W] batch, got ", img.sizes());
  check(height >= 1 && width >= 1, "resize: target size ", width, "x", height, " must be positive");
  const int64_t h = img.size(2), w = img.size(3);
  auto to = [&](const torch::Tensor& x, int64_t hh, int64_t ww) {
    return lanczos_resize_axis(lanczos_resize_axis(x, 2, hh), 3, ww).contiguous();
  };
  if (mode == "stretch") return to(img, height, width);
  const double ratio = double(width) / double(height), src_ratio = double(w) / double(h);
  if (mode == "crop") {  // scale to cover, cut out the centre
    const int64_t sw = ratio > src_ratio ? width : w * height / h, sh = ratio <= src_ratio ? height : h * width / w;
    auto r = to(img, sh, sw);
    return r.narrow(2, sh / 2 - height / 2, height).narrow(3, sw / 2 - width / 2, width).contiguous();
  }
  if (mode == "fill") {  // scale to fit, centre, stretch the edges over the bands
    const int64_t sw = ratio < src_ratio ? width : w * height / h, sh = ratio >= src_ratio ? height : h * width / w;
    auto r = to(img, sh, sw);
    auto out = torch::empty({img.size(0), img.size(1), height, width}, img.options());
    if (ratio < src_ratio) {  // bands above and below
      const int64_t top = height / 2 - sh / 2, bottom = height - top - sh;
      out.narrow(2, top, sh).copy_(r);
      if (top > 0) out.narrow(2, 0, top).copy_(r.narrow(2, 0, 1).expand({-1, -1, top, -1}));
      if (bottom > 0) out.narrow(2, top + sh, bottom).copy_(r.narrow(2, sh - 1, 1).expand({-1, -1, bottom, -1}));
    } else if (ratio > src_ratio) {  // bands left and right
      const int64_t left = width / 2 - sw / 2, right = width - left - sw;
      out.narrow(3, left, sw).copy_(r);
      if (left > 0) out.narrow(3, 0, left).copy_(r.narrow(3, 0, 1).expand({-1, -1, -1, left}));
      if (right > 0) out.narrow(3, left + sw, right).copy_(r.narrow(3, sw - 1, 1).expand({-1, -1, -1, right}));
    } else {
      out.copy_(r);
    }
    return out;
  }
  fail("unknown resize mode '", mode, "' (expected stretch, crop or fill)");
}

}  // namespace tweedie
