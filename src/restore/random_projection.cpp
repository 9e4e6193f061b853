// Compressed-sensing operator: random Gaussian projections (the compressed
// sensing task of Jalal et al. 2021, "Robust Compressed Sensing MRI with Deep
// Generative Priors", and of DDNM, Wang et al. 2023, there with Walsh-Hadamard
// rows).
//
// y = A x.flatten() with A [m, D] drawn once from the seeded generator, entries
// N(0, 1/D) (each row has unit expected norm, so a measurement is on the scale
// of a pixel), m = round(ratio D). The SVD A = U diag(S) V^T comes from
// torch::linalg_svd (full V, float64) once; A has full row rank with
// probability 1, so A^+ = V diag(1/S) U^T is exact, precomputed as a [D, m]
// matrix. Measurements are vectors [N, m].
// Verified (tests/test_restore.cpp): the generic operator identities and the
// dense least-squares pseudo-inverse; the same seed gives the same matrix.
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/restore/operator.h"

namespace tweedie {
namespace {

class RandomProjection : public Operator {
 public:
  RandomProjection(std::vector<int64_t> shape, double ratio, torch::Generator gen) : Operator(std::move(shape)) {
    check(std::isfinite(ratio) && ratio > 0 && ratio <= 1, "compressed sensing: the ratio m/n must be in (0, 1] (got ",
          ratio, ")");
    const int64_t D = in_dim(), m = std::max<int64_t>(1, std::llround(ratio * D));
    a_ = at::randn({m, D}, gen, torch::kFloat64) / std::sqrt(double(D));
    auto [u, s, vt] = torch::linalg_svd(a_, true);
    check(s.min().item<double>() > 1e-10, "compressed sensing: the random matrix is rank-deficient");
    u_ = u, s_ = s, vt_ = vt;
    pinv_ = vt.slice(0, 0, m).t().mm(torch::diag(1 / s)).mm(u.t());  // V_m diag(1/S) U^T [D, m]
  }
  std::string name() const override { return "cs"; }
  std::vector<int64_t> out_shape() const override { return {a_.size(0)}; }

  torch::Tensor A(const torch::Tensor& x) const override {
    check_x(x);
    return rows(x).mm(mat(a_, x).t());
  }
  torch::Tensor At(const torch::Tensor& y) const override {
    check_y(y);
    return image(y.mm(mat(a_, y)));
  }
  torch::Tensor pinv(const torch::Tensor& y) const override {
    check_y(y);
    return image(y.mm(mat(pinv_, y).t()));
  }

  bool has_svd() const override { return true; }
  torch::Tensor Vt(const torch::Tensor& x) const override {
    check_x(x);
    return rows(x).mm(mat(vt_, x).t());
  }
  torch::Tensor V(const torch::Tensor& v) const override {
    check(v.dim() == 2 && v.size(1) == in_dim(), "operator cs expects spectral coordinates [N, ", in_dim(), "], got ",
          v.sizes());
    return image(v.mm(mat(vt_, v)));
  }
  torch::Tensor Ut(const torch::Tensor& y) const override {
    check_y(y);
    return y.mm(mat(u_, y));
  }
  torch::Tensor U(const torch::Tensor& u) const override {
    check(u.dim() == 2 && u.size(1) == out_dim(), "operator cs expects [N, ", out_dim(), "], got ", u.sizes());
    return u.mm(mat(u_, u).t());
  }
  torch::Tensor singulars() const override { return s_; }

 private:
  static torch::Tensor mat(const torch::Tensor& m, const torch::Tensor& like) { return m.to(like.options()); }
  torch::Tensor rows(const torch::Tensor& x) const { return x.reshape({x.size(0), in_dim()}); }
  torch::Tensor image(const torch::Tensor& flat) const {
    return flat.reshape({flat.size(0), in_shape_[0], in_shape_[1], in_shape_[2]});
  }
  torch::Tensor a_, u_, s_, vt_, pinv_;  // float64
};

}  // namespace

OperatorPtr make_random_projection(const std::vector<int64_t>& in_shape, double ratio, torch::Generator gen) {
  return std::make_shared<RandomProjection>(in_shape, ratio, gen);
}

}  // namespace tweedie
