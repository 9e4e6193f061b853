// Denoising operator: A = I (y = x + sigma_y n; the denoising task of DDRM,
// Kawar et al. 2022, and DDNM+, Wang et al. 2023).
// A^T = A^+ = I; SVD U = V = I, S = 1.
// Verified (tests/test_restore.cpp): the generic operator identities.
#include "tweedie/core/error.h"
#include "tweedie/restore/operator.h"

namespace tweedie {
namespace {

class Identity : public Operator {
 public:
  using Operator::Operator;
  std::string name() const override { return "denoise"; }
  torch::Tensor A(const torch::Tensor& x) const override {
    check_x(x);
    return x;
  }
  torch::Tensor At(const torch::Tensor& y) const override {
    check_y(y);
    return y;
  }
  torch::Tensor pinv(const torch::Tensor& y) const override { return At(y); }

  bool has_svd() const override { return true; }
  torch::Tensor Vt(const torch::Tensor& x) const override {
    check_x(x);
    return x.reshape({x.size(0), in_dim()});
  }
  torch::Tensor V(const torch::Tensor& v) const override { return image(v); }
  torch::Tensor Ut(const torch::Tensor& y) const override { return Vt(y); }
  torch::Tensor U(const torch::Tensor& u) const override { return image(u); }
  torch::Tensor singulars() const override { return torch::ones({in_dim()}, torch::kFloat64); }

 private:
  torch::Tensor image(const torch::Tensor& v) const {
    check(v.dim() == 2 && v.size(1) == in_dim(), "operator ", name(), " expects spectral coordinates [N, ", in_dim(),
          "], got ", v.sizes());
    return v.reshape({v.size(0), in_shape_[0], in_shape_[1], in_shape_[2]});
  }
};

}  // namespace

OperatorPtr make_identity(const std::vector<int64_t>& in_shape) { return std::make_shared<Identity>(in_shape); }

}  // namespace tweedie
