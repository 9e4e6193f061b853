// Super-resolution operator: bicubic downsampling (the "SR with a bicubic
// kernel" operator of DDRM, Kawar et al. 2022, whose SRConv builds it the same
// way: a separable 1-D matrix with an SVD per axis).
//
// Per axis, low-resolution pixel i of n / f sits at input position
// c = (i + 1/2) f - 1/2 and averages input pixels j with weights
// w(j) = K((j - c) / f), K the Keys cubic with a = -0.5 (4 f taps), borders
// reflected half-sample symmetrically (-1 -> 0, n -> n - 1), each row
// normalised to sum 1: B [n / f, n] (antialiased bicubic resizing, as MATLAB's
// imresize). The operator is A x = B_h X B_w^T per channel, the Kronecker
// product B_h (x) B_w. With the 1-D SVDs B = U_1 diag(s_1) V_1^T (full, by
// torch::linalg_svd once), A = (U_h (x) U_w) diag(s_h (x) s_w) (V_h (x) V_w)^T:
//   V^T x = V_h^T X V_w, whose (i < h, j < w) block pairs with U^T y = U_h^T Y U_w
//   (the first M spectral coordinates), the rest the null space;
//   A^T y = B_h^T Y B_w,  A^+ y = B_h^+ Y (B_w^+)^T (B has full row rank).
// Verified (tests/test_restore.cpp): the generic operator identities and the
// dense least-squares pseudo-inverse, rows summing to 1, and a constant image
// mapped to the same constant.
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/restore/operator.h"

namespace tweedie {

torch::Tensor bicubic_downsample_matrix(int64_t n, int64_t f) {
  check(f >= 1 && n % f == 0, "bicubic downsampling x", f, " needs a side divisible by ", f, ", got ", n);
  auto keys = [](double x) {
    const double a = -0.5, t = std::abs(x);
    if (t <= 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
    if (t < 2) return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a;
    return 0.0;
  };
  auto reflect = [n](int64_t j) {
    while (j < 0 || j >= n) j = j < 0 ? -j - 1 : 2 * n - 1 - j;
    return j;
  };
  auto B = torch::zeros({n / f, n}, torch::kFloat64);
  auto b = B.accessor<double, 2>();
  for (int64_t i = 0; i < n / f; ++i) {
    const double c = (i + 0.5) * f - 0.5;
    double total = 0;
    for (int64_t j = int64_t(std::floor(c - 2 * f)); j <= int64_t(std::ceil(c + 2 * f)); ++j) {
      const double w = keys((j - c) / f);
      b[i][reflect(j)] += w;
      total += w;
    }
    for (int64_t j = 0; j < n; ++j) b[i][j] /= total;
  }
  return B;
}

namespace {

// A x = B_h X B_w^T per channel, with the SVD of the Kronecker product.
class Separable : public Operator {
 public:
  Separable(std::vector<int64_t> shape, torch::Tensor bh, torch::Tensor bw, std::string name, int64_t factor)
      : Operator(std::move(shape)), name_(std::move(name)), f_(factor), bh_(bh), bw_(bw) {
    auto [uh, sh, vh] = torch::linalg_svd(bh, true);
    auto [uw, sw, vw] = torch::linalg_svd(bw, true);
    check(sh.min().item<double>() > 1e-12 && sw.min().item<double>() > 1e-12, name_,
          ": the 1-D factors must have full row rank");
    uh_ = uh, uw_ = uw, vth_ = vh, vtw_ = vw;  // linalg_svd returns V^T
    bh_pinv_ = torch::linalg::pinv(bh);
    bw_pinv_ = torch::linalg::pinv(bw);
    const int64_t C = in_shape_[0], H = in_shape_[1], W = in_shape_[2], h = bh.size(0), w = bw.size(0);
    singulars_ = torch::outer(sh, sw).unsqueeze(0).expand({C, h, w}).reshape({-1}).contiguous();
    // Spectral order: the measured (i < h, j < w) coordinates of every channel first.
    auto measured = torch::zeros({C, H, W}, torch::kBool);
    measured.slice(1, 0, h).slice(2, 0, w).fill_(true);
    auto flat = measured.reshape({-1});
    order_ = torch::cat({flat.nonzero().squeeze(1), (~flat).nonzero().squeeze(1)});
  }
  std::string name() const override { return name_; }
  std::vector<int64_t> out_shape() const override { return {in_shape_[0], bh_.size(0), bw_.size(0)}; }
  int64_t sr_factor() const override { return f_; }

  torch::Tensor A(const torch::Tensor& x) const override {
    check_x(x);
    return apply(bh_, x, bw_);
  }
  torch::Tensor At(const torch::Tensor& y) const override {
    check_y(y);
    return apply(bh_.t(), y, bw_.t());
  }
  torch::Tensor pinv(const torch::Tensor& y) const override {
    check_y(y);
    return apply(bh_pinv_, y, bw_pinv_);
  }

  bool has_svd() const override { return true; }
  torch::Tensor Vt(const torch::Tensor& x) const override {
    check_x(x);
    auto z = apply(vth_, x, vtw_).reshape({x.size(0), in_dim()});
    return z.index_select(1, order_.to(x.device()));
  }
  torch::Tensor V(const torch::Tensor& v) const override {
    check(v.dim() == 2 && v.size(1) == in_dim(), "operator ", name_, " expects spectral coordinates [N, ", in_dim(),
          "], got ", v.sizes());
    auto z = torch::zeros_like(v).index_copy(1, order_.to(v.device()), v);
    return apply(vth_.t(), z.reshape({v.size(0), in_shape_[0], in_shape_[1], in_shape_[2]}), vtw_.t());
  }
  torch::Tensor Ut(const torch::Tensor& y) const override {
    check_y(y);
    return apply(uh_.t(), y, uw_.t()).reshape({y.size(0), out_dim()});
  }
  torch::Tensor U(const torch::Tensor& u) const override {
    check(u.dim() == 2 && u.size(1) == out_dim(), "operator ", name_, " expects [N, ", out_dim(), "], got ",
          u.sizes());
    auto s = out_shape();
    return apply(uh_, u.reshape({u.size(0), s[0], s[1], s[2]}), uw_);
  }
  torch::Tensor singulars() const override { return singulars_; }

 private:
  // L X R^T over the last two dimensions.
  static torch::Tensor apply(const torch::Tensor& L, const torch::Tensor& X, const torch::Tensor& R) {
    return torch::matmul(torch::matmul(L.to(X.options()), X), R.t().to(X.options()));
  }
  std::string name_;
  int64_t f_;
  torch::Tensor bh_, bw_, bh_pinv_, bw_pinv_, uh_, uw_, vth_, vtw_;  // float64
  torch::Tensor singulars_, order_;
};

}  // namespace

OperatorPtr make_bicubic_downsample(const std::vector<int64_t>& in_shape, int64_t factor) {
  check(in_shape.size() == 3, "operators take images [C, H, W], got shape ", c10::IntArrayRef(in_shape));
  check(factor >= 1, "super-resolution factor must be >= 1 (got ", factor, ")");
  check(in_shape[1] % factor == 0 && in_shape[2] % factor == 0, "super-resolution x", factor,
        " needs image sides divisible by ", factor, ", got ", in_shape[1], "x", in_shape[2]);
  return std::make_shared<Separable>(in_shape, bicubic_downsample_matrix(in_shape[1], factor),
                                     bicubic_downsample_matrix(in_shape[2], factor),
                                     "sr" + std::to_string(factor) + "-bicubic", factor);
}

}  // namespace tweedie
