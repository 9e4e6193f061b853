// Super-resolution operator: f x f average pooling (the "SR by block
// averaging" operator of DDRM, Kawar et al. 2022, and DDNM, Wang et al. 2023).
//
// y = avgpool_f(x): each low-resolution pixel is the mean of its f x f block.
// A^T y spreads y / f^2 over the block and A^+ y copies y into it
// (nearest-neighbour upsampling). SVD: each block is one row (1/f^2) 1^T of
// norm 1/f, so S = 1/f per low-resolution pixel, U = I, and V is, per block,
// the Householder reflection Q = I - 2 w w^T / |w|^2, w = e1 - 1/f, whose
// first column is the uniform unit vector 1/f (symmetric, Q^T = Q = Q^-1).
// Spectral coordinates: the uniform component of every block first (pairing
// with y), then the f^2 - 1 others of every block (the null space).
// Verified (tests/test_restore.cpp): the generic operator identities, the
// dense least-squares pseudo-inverse, and A^+ = nearest upsampling.
#include "tweedie/core/error.h"
#include "tweedie/restore/operator.h"

namespace tweedie {
namespace {

class AvgPool : public Operator {
 public:
  AvgPool(std::vector<int64_t> shape, int64_t f) : Operator(std::move(shape)), f_(f) {
    check(f >= 1, "super-resolution factor must be >= 1 (got ", f, ")");
    check(in_shape_[1] % f == 0 && in_shape_[2] % f == 0, "super-resolution x", f, " needs image sides divisible by ",
          f, ", got ", in_shape_[1], "x", in_shape_[2]);
    const int64_t k = f * f;
    auto w = -torch::full({k}, 1.0 / f, torch::kFloat64);
    w[0] += 1.0;
    const double ww = w.dot(w).item<double>();
    q_ = torch::eye(k, torch::kFloat64);
    if (ww > 0) q_ -= torch::outer(w, w) * (2.0 / ww);
  }
  std::string name() const override { return "sr" + std::to_string(f_); }
  std::vector<int64_t> out_shape() const override { return {in_shape_[0], in_shape_[1] / f_, in_shape_[2] / f_}; }
  int64_t sr_factor() const override { return f_; }

  torch::Tensor A(const torch::Tensor& x) const override {
    check_x(x);
    return torch::avg_pool2d(x, {f_, f_});
  }
  torch::Tensor At(const torch::Tensor& y) const override { return pinv(y) / double(f_ * f_); }
  torch::Tensor pinv(const torch::Tensor& y) const override {
    check_y(y);
    return y.repeat_interleave(f_, 2).repeat_interleave(f_, 3);
  }

  bool has_svd() const override { return true; }
  torch::Tensor Vt(const torch::Tensor& x) const override {
    check_x(x);
    const int64_t N = x.size(0), C = in_shape_[0], h = in_shape_[1] / f_, w = in_shape_[2] / f_;
    auto blocks = x.reshape({N, C, h, f_, w, f_}).permute({0, 1, 2, 4, 3, 5}).reshape({N, C * h * w, f_ * f_});
    auto c = torch::matmul(blocks, q_.to(x.options()));  // Q symmetric: rows times Q = (Q^T b)^T
    return torch::cat({c.select(2, 0), c.slice(2, 1).reshape({N, -1})}, 1);
  }
  torch::Tensor V(const torch::Tensor& v) const override {
    check(v.dim() == 2 && v.size(1) == in_dim(), "operator ", name(), " expects spectral coordinates [N, ", in_dim(),
          "], got ", v.sizes());
    const int64_t N = v.size(0), C = in_shape_[0], h = in_shape_[1] / f_, w = in_shape_[2] / f_, M = C * h * w;
    auto c = torch::cat({v.slice(1, 0, M).unsqueeze(2), v.slice(1, M).reshape({N, M, f_ * f_ - 1})}, 2);
    auto blocks = torch::matmul(c, q_.to(v.options()));
    return blocks.reshape({N, C, h, w, f_, f_}).permute({0, 1, 2, 4, 3, 5}).reshape({N, C, h * f_, w * f_});
  }
  torch::Tensor Ut(const torch::Tensor& y) const override {
    check_y(y);
    return y.reshape({y.size(0), out_dim()});
  }
  torch::Tensor U(const torch::Tensor& u) const override {
    check(u.dim() == 2 && u.size(1) == out_dim(), "operator ", name(), " expects [N, ", out_dim(), "], got ",
          u.sizes());
    auto s = out_shape();
    return u.reshape({u.size(0), s[0], s[1], s[2]});
  }
  torch::Tensor singulars() const override { return torch::full({out_dim()}, 1.0 / f_, torch::kFloat64); }

 private:
  int64_t f_;
  torch::Tensor q_;  // [f^2, f^2] float64
};

}  // namespace

OperatorPtr make_avgpool(const std::vector<int64_t>& in_shape, int64_t factor) {
  return std::make_shared<AvgPool>(in_shape, factor);
}

}  // namespace tweedie
