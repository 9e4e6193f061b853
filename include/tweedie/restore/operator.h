// Operator: a linear degradation A for inverse problems, y = A x + sigma_y n.
//
// An operator is built for one sample shape [C, H, W] and applies to every
// sample of a batch [N, C, H, W] alike; measurements are [N, out_shape()...].
// Each operator gives A, its adjoint A^T and its pseudo-inverse A^+, and its
// singular value decomposition in the sense of DDRM (Kawar et al. 2022):
//
//     A = U diag(S) V^T,   V: D x D orthogonal (D = C H W),
//                          U: M x M orthogonal (M = prod(out_shape())),
//                          S: M singular values (>= 0, in no particular order),
//
// given as functions: Vt(x) -> [N, D] spectral coordinates, the first M of
// which pair with Ut(y) -> [N, M]; coordinates M..D-1 span the null space.
// Singular values at or below cutoff() count as zero for A^+ and for the
// solvers (DDNM, DDRM, ...): A^+ is the truncated-SVD pseudo-inverse, the
// exact Moore-Penrose inverse when cutoff() is 0.
//
// Operators (one file each, src/restore/):
//   mask.cpp      inpainting: y = m * x with a 0/1 pixel mask (box or random);
//                 y keeps the image shape, zero where unobserved
//   avgpool.cpp   super-resolution: y = f x f average pooling (x2, x4)
//   blur.cpp      circular Gaussian blur through the FFT, SVD in the real
//                 (Hartley) Fourier basis
//   identity.cpp  denoising: A = I
// Verified (tests/test_restore.cpp): <A x, y> = <x, A^T y>; A A^+ A = A and
// A^+ A A^+ = A^+; A^+ y equals the least-squares solution from a dense
// matrix; U diag(S) V^T x = A x with V and U orthogonal, for every operator.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

namespace tweedie {

class Operator {
 public:
  explicit Operator(std::vector<int64_t> in_shape);
  virtual ~Operator() = default;
  virtual std::string name() const = 0;

  const std::vector<int64_t>& in_shape() const { return in_shape_; }  // [C, H, W]
  virtual std::vector<int64_t> out_shape() const { return in_shape_; }
  int64_t in_dim() const;   // D
  int64_t out_dim() const;  // M

  // x [N, in_shape...] -> y [N, out_shape...] and back. Any float dtype and
  // device; the result follows the input.
  virtual torch::Tensor A(const torch::Tensor& x) const = 0;
  virtual torch::Tensor At(const torch::Tensor& y) const = 0;
  virtual torch::Tensor pinv(const torch::Tensor& y) const = 0;

  // SVD (see above). has_svd() false: the four maps and singulars() throw an
  // Error naming the operator.
  virtual bool has_svd() const { return false; }
  virtual torch::Tensor Vt(const torch::Tensor& x) const;  // [N, in_shape...] -> [N, D]
  virtual torch::Tensor V(const torch::Tensor& v) const;   // [N, D] -> [N, in_shape...]
  virtual torch::Tensor Ut(const torch::Tensor& y) const;  // [N, out_shape...] -> [N, M]
  virtual torch::Tensor U(const torch::Tensor& u) const;   // [N, M] -> [N, out_shape...]
  virtual torch::Tensor singulars() const;                 // [M] float64
  // Singular values <= cutoff() are treated as zero (0 unless the operator sets one).
  double cutoff() const { return cutoff_; }
  // The singular value of each of the D spectral coordinates of Vt(): S for
  // the first M, 0 for the null space, and 0 where S <= cutoff() [D] float64.
  torch::Tensor spectral_singulars() const;

  // Measurement noise shaped like a measurement of x: standard normal on what
  // is observed (the mask zeroes the rest, so y stays in the range of A).
  virtual torch::Tensor noise(const torch::Tensor& y, torch::Generator gen) const;
  // y = A x + sigma_y n, n from noise() (sigma_y >= 0; gen may be undefined when sigma_y = 0).
  torch::Tensor measure(const torch::Tensor& x, double sigma_y, torch::Generator gen = {}) const;

  // Shape checks used by the maps: Error "operator NAME expects x [N, C, H, W], got [...]".
  void check_x(const torch::Tensor& x) const;
  void check_y(const torch::Tensor& y) const;
  void require_svd(const std::string& who) const;  // Error "WHO needs an operator with a known SVD; NAME has none"

 protected:
  std::vector<int64_t> in_shape_;
  double cutoff_ = 0;
};

using OperatorPtr = std::shared_ptr<const Operator>;

// ---- the operators ----------------------------------------------------------
// Inpainting with a pixel mask m [H, W] (1 = observed, 0 = missing), shared by
// every channel. y = m * x, A^T = A^+ = A; SVD U = V = I, S = m per coordinate.
OperatorPtr make_mask(const std::vector<int64_t>& in_shape, torch::Tensor mask, std::string name = "mask");
// The centred box of height h and width w missing (default: half of each side).
OperatorPtr make_box_mask(const std::vector<int64_t>& in_shape, int64_t h = 0, int64_t w = 0);
// Each pixel missing with probability `missing`, from gen.
OperatorPtr make_random_mask(const std::vector<int64_t>& in_shape, double missing, torch::Generator gen);
// Super-resolution: f x f average pooling (H, W divisible by f). A^+ is
// nearest-neighbour upsampling; SVD: singular value 1/f per low-resolution
// pixel, V a Householder basis of each block whose first vector is uniform.
OperatorPtr make_avgpool(const std::vector<int64_t>& in_shape, int64_t factor);
// Circular Gaussian blur with standard deviation `std` pixels (the kernel is
// the periodised Gaussian over the whole image, normalised to sum 1).
// Singular values are |H(k)| of its transfer function; those <= cutoff are
// dropped by A^+ and the solvers.
OperatorPtr make_gaussian_blur(const std::vector<int64_t>& in_shape, double std, double cutoff = 0);
// Denoising: A = I.
OperatorPtr make_identity(const std::vector<int64_t>& in_shape);

// The restoration tasks by name, as `tweedie restore --task` takes them:
// inpaint-box, inpaint-random (half the pixels missing), sr2, sr4, blur
// (std 1.5 px, cutoff 0.02), denoise. gen draws the random mask.
OperatorPtr make_task_operator(const std::string& task, const std::vector<int64_t>& in_shape,
                               torch::Generator gen = {});
std::vector<std::string> task_names();

}  // namespace tweedie
