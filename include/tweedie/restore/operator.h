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
//   bicubic.cpp   super-resolution: bicubic (Keys) downsampling x2, x4, a
//                 separable matrix B_h X B_w^T with the SVD of its 1-D factors
//   blur.cpp      circular blur with an even kernel through the FFT, SVD in
//                 the real (Hartley) Fourier basis: Gaussian ...
//   motion_blur.cpp  ... and motion blur (a line kernel)
//   random_projection.cpp  compressed sensing: a seeded Gaussian matrix
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

  // A is a 0/1 pixel mask (A = A^T = A^+, a diagonal projection): the
  // inpainting solvers RePaint and Blended Diffusion take only these.
  virtual bool is_mask() const { return false; }
  // Super-resolution factor f (y is the image at 1/f of the size), 0 for other
  // operators: the bicubic-upsampling baseline takes only these.
  virtual int64_t sr_factor() const { return 0; }

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
// Circular convolution with an even kernel k [H, W] (k(-d) = k(d) modulo the
// image size; the origin at index (0, 0)) through the FFT: A = A^T, and the SVD
// is in the Hartley basis as for the Gaussian. Singular values <= cutoff are
// dropped by A^+ and the solvers. Error if k is not even or not [H, W].
OperatorPtr make_circular_blur(const std::vector<int64_t>& in_shape, torch::Tensor kernel, std::string name,
                               double cutoff = 0);
// Motion blur: the line segment of `length` pixels at `angle` degrees
// (counter-clockwise from the x axis), centred on the pixel, rasterised
// bilinearly from 16 samples per pixel of length and normalised to sum 1;
// circular (make_circular_blur). Its transfer function has zeros, so
// restoration uses a cutoff.
OperatorPtr make_motion_blur(const std::vector<int64_t>& in_shape, double length, double angle, double cutoff = 0);
// The line kernel of make_motion_blur [H, W] float64 (for tests and pictures).
torch::Tensor motion_blur_kernel(int64_t H, int64_t W, double length, double angle);
// Super-resolution by bicubic downsampling (H, W divisible by f): each
// low-resolution pixel is a Keys cubic (a = -0.5) stretched by f (4 f taps per
// axis), centred on its block, with half-sample symmetric borders and rows
// normalised to sum 1 (antialiased bicubic resizing as in MATLAB's imresize).
// A = B_h X B_w^T per channel; the SVD is the Kronecker product of the 1-D
// factors' SVDs (exact); A^+ = B_h^+ Y (B_w^+)^T.
OperatorPtr make_bicubic_downsample(const std::vector<int64_t>& in_shape, int64_t factor);
// The 1-D bicubic downsampling matrix [n / f, n] of make_bicubic_downsample.
torch::Tensor bicubic_downsample_matrix(int64_t n, int64_t factor);
// Compressed sensing: y = A x with A a Gaussian matrix [m, D], entries
// N(0, 1/D) drawn from gen, m = round(ratio D) (0 < ratio <= 1); y is [N, m].
// Its SVD comes from torch::linalg_svd once; A^+ is exact.
OperatorPtr make_random_projection(const std::vector<int64_t>& in_shape, double ratio, torch::Generator gen);
// Denoising: A = I.
OperatorPtr make_identity(const std::vector<int64_t>& in_shape);

// The restoration tasks by name, as `tweedie restore --task` takes them:
// inpaint-box, inpaint-random (half the pixels missing), sr2, sr4 (average
// pooling), sr4-bicubic, blur (Gaussian, std 1.5 px, cutoff 0.02),
// motion-blur (length 7 px at 45 degrees, cutoff 0.05), cs (25 % random
// projections), denoise. gen draws the random mask and the projection.
OperatorPtr make_task_operator(const std::string& task, const std::vector<int64_t>& in_shape,
                               torch::Generator gen = {});
std::vector<std::string> task_names();

}  // namespace tweedie
