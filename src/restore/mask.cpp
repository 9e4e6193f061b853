// Inpainting operator: a 0/1 pixel mask (Lugmayr et al. 2022, RePaint; the
// masking operator of DDRM, Kawar et al. 2022, and DDNM, Wang et al. 2023).
//
// y = m * x with m [H, W] shared by the channels; y keeps the image shape and
// is zero where a pixel is missing. A is an orthogonal projection, so
// A^T = A^+ = A, and its SVD is U = V = I with S = m per coordinate (the
// missing coordinates are the null space, singular value 0).
// Verified (tests/test_restore.cpp): the generic operator identities and the
// dense least-squares pseudo-inverse; the box and random masks miss the pixels
// they should.
#include <ATen/CPUGeneratorImpl.h>

#include "tweedie/core/error.h"
#include "tweedie/restore/operator.h"

namespace tweedie {
namespace {

class Mask : public Operator {
 public:
  Mask(std::vector<int64_t> shape, torch::Tensor m, std::string name)
      : Operator(std::move(shape)), name_(std::move(name)) {
    check(m.dim() == 2 && m.size(0) == in_shape_[1] && m.size(1) == in_shape_[2], "mask '", name_, "' has shape ",
          m.sizes(), ", expected [", in_shape_[1], ", ", in_shape_[2], "]");
    m = m.to(torch::kFloat64);
    check(((m == 0) | (m == 1)).all().item<bool>(), "mask '", name_, "' must hold only 0 and 1");
    mask_ = m.unsqueeze(0).expand({in_shape_[0], in_shape_[1], in_shape_[2]}).contiguous();
  }
  std::string name() const override { return name_; }

  torch::Tensor A(const torch::Tensor& x) const override {
    check_x(x);
    return x * m(x);
  }
  torch::Tensor At(const torch::Tensor& y) const override {
    check_y(y);
    return y * m(y);
  }
  torch::Tensor pinv(const torch::Tensor& y) const override { return At(y); }
  bool is_mask() const override { return true; }

  bool has_svd() const override { return true; }
  torch::Tensor Vt(const torch::Tensor& x) const override {
    check_x(x);
    return x.reshape({x.size(0), in_dim()});
  }
  torch::Tensor V(const torch::Tensor& v) const override { return flat_to(v, in_shape_); }
  torch::Tensor Ut(const torch::Tensor& y) const override {
    check_y(y);
    return y.reshape({y.size(0), out_dim()});
  }
  torch::Tensor U(const torch::Tensor& u) const override { return flat_to(u, in_shape_); }
  torch::Tensor singulars() const override { return mask_.reshape({-1}); }

  torch::Tensor noise(const torch::Tensor& y, torch::Generator gen) const override {
    return Operator::noise(y, gen) * m(y);
  }

 private:
  torch::Tensor m(const torch::Tensor& like) const { return mask_.to(like.options()); }
  torch::Tensor flat_to(const torch::Tensor& v, const std::vector<int64_t>& shape) const {
    check(v.dim() == 2 && v.size(1) == in_dim(), "operator ", name_, " expects spectral coordinates [N, ", in_dim(),
          "], got ", v.sizes());
    std::vector<int64_t> s{v.size(0)};
    s.insert(s.end(), shape.begin(), shape.end());
    return v.reshape(s);
  }
  std::string name_;
  torch::Tensor mask_;  // [C, H, W] float64
};

}  // namespace

OperatorPtr make_mask(const std::vector<int64_t>& in_shape, torch::Tensor mask, std::string name) {
  return std::make_shared<Mask>(in_shape, std::move(mask), std::move(name));
}

OperatorPtr make_box_mask(const std::vector<int64_t>& in_shape, int64_t h, int64_t w) {
  check(in_shape.size() == 3, "operators take images [C, H, W], got shape ", c10::IntArrayRef(in_shape));
  const int64_t H = in_shape[1], W = in_shape[2];
  if (h == 0) h = H / 2;
  if (w == 0) w = W / 2;
  check(h > 0 && h <= H && w > 0 && w <= W, "box mask ", h, "x", w, " does not fit a ", H, "x", W, " image");
  auto m = torch::ones({H, W}, torch::kFloat64);
  const int64_t top = (H - h) / 2, left = (W - w) / 2;
  m.slice(0, top, top + h).slice(1, left, left + w).zero_();
  return make_mask(in_shape, m, "inpaint-box");
}

OperatorPtr make_random_mask(const std::vector<int64_t>& in_shape, double missing, torch::Generator gen) {
  check(in_shape.size() == 3, "operators take images [C, H, W], got shape ", c10::IntArrayRef(in_shape));
  check(missing >= 0 && missing <= 1, "random mask: the missing fraction must be in [0, 1] (got ", missing, ")");
  auto u = at::rand({in_shape[1], in_shape[2]}, gen, torch::kFloat64);
  return make_mask(in_shape, (u >= missing).to(torch::kFloat64), "inpaint-random");
}

}  // namespace tweedie
