// Deblurring operator: circular Gaussian blur through the FFT (the Gaussian
// deblurring operator of DDRM, Kawar et al. 2022, and DDNM, Wang et al. 2023,
// made circular so that its SVD is exact in a Fourier basis).
//
// y = k (*) x, circular convolution with the periodised Gaussian kernel
// k(dy, dx) ~ sum over periods of exp(-(dy^2 + dx^2) / (2 std^2)), summing
// to 1 (its transfer function is positive), computed as y = IFFT(H . FFT(x)) per channel with H = FFT(k). k is
// even, so H is real and even, A is symmetric (A^T = A), and A is diagonal in
// the real orthonormal Hartley basis: with DHT(x) = (Re FFT(x) - Im FFT(x)) /
// sqrt(HW) (an involution), DHT(k (*) x) = H . DHT(x). So the SVD is
//   V^T = DHT,  S = |H|,  U = V diag(sign H),
// one coordinate per (channel, frequency). A^+ multiplies by 1/H where
// |H| > cutoff and by 0 elsewhere (truncated-SVD inverse; a Gaussian's high
// frequencies are far below float32 precision, so restoration uses a cutoff).
// Verified (tests/test_restore.cpp): the generic operator identities with
// cutoff 0 in float64, the cutoff's truncation, and A against a direct
// spatial circular convolution.
#include <cmath>

#include <torch/fft.h>

#include "tweedie/core/error.h"
#include "tweedie/restore/operator.h"

namespace tweedie {
namespace {

class GaussianBlur : public Operator {
 public:
  GaussianBlur(std::vector<int64_t> shape, double std, double cutoff) : Operator(std::move(shape)), std_(std) {
    check(std::isfinite(std) && std > 0, "blur: std must be > 0 (got ", std, ")");
    check(std::isfinite(cutoff) && cutoff >= 0 && cutoff < 1, "blur: cutoff must be in [0, 1) (got ", cutoff, ")");
    cutoff_ = cutoff;
    const int64_t H = in_shape_[1], W = in_shape_[2];
    // One axis of the kernel: the Gaussian summed over every period within
    // 40 std (the rest is below double precision), so its transfer function
    // is the sampled, aliased Gaussian spectrum: positive at every frequency.
    auto axis = [std](int64_t n) {
      auto i = torch::arange(n, torch::kFloat64);
      const int64_t wraps = int64_t(std::ceil(40 * std / n)) + 1;
      auto k = torch::zeros({n}, torch::kFloat64);
      for (int64_t m = -wraps; m <= wraps; ++m) k += torch::exp(-(i + double(m * n)).pow(2) / (2 * std * std));
      return k / k.sum();
    };
    auto k = torch::outer(axis(H), axis(W));
    h_ = torch::real(torch::fft::fft2(k)).contiguous();  // real up to rounding: k is even
    sign_ = torch::where(h_ < 0, -torch::ones_like(h_), torch::ones_like(h_));
    hinv_ = torch::where(h_.abs() > cutoff, 1.0 / h_, torch::zeros_like(h_));
  }
  std::string name() const override { return "blur"; }

  torch::Tensor A(const torch::Tensor& x) const override {
    check_x(x);
    return filter(x, h_);
  }
  torch::Tensor At(const torch::Tensor& y) const override {
    check_y(y);
    return filter(y, h_);
  }
  torch::Tensor pinv(const torch::Tensor& y) const override {
    check_y(y);
    return filter(y, hinv_);
  }

  bool has_svd() const override { return true; }
  torch::Tensor Vt(const torch::Tensor& x) const override {
    check_x(x);
    return dht(x).reshape({x.size(0), in_dim()});
  }
  torch::Tensor V(const torch::Tensor& v) const override { return dht(image(v)); }
  torch::Tensor Ut(const torch::Tensor& y) const override {
    check_y(y);
    return (dht(y) * sign_.to(y.options())).reshape({y.size(0), in_dim()});
  }
  torch::Tensor U(const torch::Tensor& u) const override {
    auto img = image(u);
    return dht(img * sign_.to(u.options()));
  }
  torch::Tensor singulars() const override {
    return h_.abs().unsqueeze(0).expand({in_shape_[0], in_shape_[1], in_shape_[2]}).reshape({-1}).contiguous();
  }

 private:
  torch::Tensor filter(const torch::Tensor& x, const torch::Tensor& tf) const {
    auto F = torch::fft::fft2(x);
    return torch::real(torch::fft::ifft2(F * tf.to(x.options()))).contiguous();
  }
  // Orthonormal 2-D discrete Hartley transform over the last two dimensions.
  torch::Tensor dht(const torch::Tensor& x) const {
    auto F = torch::fft::fft2(x);
    return (torch::real(F) - torch::imag(F)) / std::sqrt(double(in_shape_[1] * in_shape_[2]));
  }
  torch::Tensor image(const torch::Tensor& v) const {
    check(v.dim() == 2 && v.size(1) == in_dim(), "operator ", name(), " expects spectral coordinates [N, ", in_dim(),
          "], got ", v.sizes());
    return v.reshape({v.size(0), in_shape_[0], in_shape_[1], in_shape_[2]});
  }
  double std_;
  torch::Tensor h_, sign_, hinv_;  // [H, W] float64
};

}  // namespace

OperatorPtr make_gaussian_blur(const std::vector<int64_t>& in_shape, double std, double cutoff) {
  return std::make_shared<GaussianBlur>(in_shape, std, cutoff);
}

}  // namespace tweedie
