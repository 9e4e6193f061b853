// Deblurring operators: circular convolution with an even kernel through the
// FFT (the deblurring operators of DDRM, Kawar et al. 2022, and DDNM, Wang et
// al. 2023, made circular so that the SVD is exact in a Fourier basis). The
// kernel is a parameter: the Gaussian is built here, the motion-blur line in
// motion_blur.cpp.
//
// y = k (*) x, circular convolution, computed as y = IFFT(H . FFT(x)) per
// channel with H = FFT(k). k is even (k(-d) = k(d)), so H is real and even, A
// is symmetric (A^T = A), and A is diagonal in the real orthonormal Hartley
// basis: with DHT(x) = (Re FFT(x) - Im FFT(x)) / sqrt(HW) (an involution),
// DHT(k (*) x) = H . DHT(x). So the SVD is
//   V^T = DHT,  S = |H|,  U = V diag(sign H),
// one coordinate per (channel, frequency). A^+ multiplies by 1/H where
// |H| > cutoff and by 0 elsewhere (truncated-SVD inverse; a Gaussian's high
// frequencies are far below float32 precision and a line kernel's transfer
// function has zeros, so restoration uses a cutoff).
// Gaussian: k(dy, dx) ~ sum over periods of exp(-(dy^2 + dx^2) / (2 std^2)),
// summing to 1 (its transfer function is positive).
// Verified (tests/test_restore.cpp): the generic operator identities with
// cutoff 0 in float64, the cutoff's truncation, A against a direct spatial
// circular convolution, and an odd kernel rejected.
#include <cmath>

#include <torch/fft.h>

#include "tweedie/core/error.h"
#include "tweedie/restore/operator.h"

namespace tweedie {
namespace {

class CircularBlur : public Operator {
 public:
  CircularBlur(std::vector<int64_t> shape, torch::Tensor k, std::string name, double cutoff)
      : Operator(std::move(shape)), name_(std::move(name)) {
    check(std::isfinite(cutoff) && cutoff >= 0 && cutoff < 1, name_, ": cutoff must be in [0, 1) (got ", cutoff, ")");
    const int64_t H = in_shape_[1], W = in_shape_[2];
    check(k.dim() == 2 && k.size(0) == H && k.size(1) == W, name_, ": the kernel must be [", H, ", ", W, "], got ",
          k.sizes());
    k = k.to(torch::kFloat64);
    check(torch::isfinite(k).all().item<bool>(), name_, ": the kernel contains NaN or infinity");
    // k(-d): flip, then roll by one so that index 0 stays in place.
    auto mirrored = torch::roll(k.flip({0, 1}), {1, 1}, {0, 1});
    check((k - mirrored).abs().max().item<double>() <= 1e-12 * k.abs().max().item<double>(), name_,
          ": the kernel must be even (k(-d) = k(d) around index (0, 0)) for a real SVD");
    cutoff_ = cutoff;
    h_ = torch::real(torch::fft::fft2(k)).contiguous();  // real up to rounding: k is even
    sign_ = torch::where(h_ < 0, -torch::ones_like(h_), torch::ones_like(h_));
    hinv_ = torch::where(h_.abs() > cutoff, 1.0 / h_, torch::zeros_like(h_));
  }
  std::string name() const override { return name_; }

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
  std::string name_;
  torch::Tensor h_, sign_, hinv_;  // [H, W] float64
};

}  // namespace

OperatorPtr make_circular_blur(const std::vector<int64_t>& in_shape, torch::Tensor kernel, std::string name,
                               double cutoff) {
  return std::make_shared<CircularBlur>(in_shape, std::move(kernel), std::move(name), cutoff);
}

OperatorPtr make_gaussian_blur(const std::vector<int64_t>& in_shape, double std, double cutoff) {
  check(std::isfinite(std) && std > 0, "blur: std must be > 0 (got ", std, ")");
  check(in_shape.size() == 3, "operators take images [C, H, W], got shape ", c10::IntArrayRef(in_shape));
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
  return make_circular_blur(in_shape, torch::outer(axis(in_shape[1]), axis(in_shape[2])), "blur", cutoff);
}

}  // namespace tweedie
