// Inverse problems: the operators' algebra (adjoint, pseudo-inverse, SVD)
// against dense matrices, and the solvers (DDNM, DDNM+, DDRM, PiGDM, DPS, MCG,
// RePaint, Blended Diffusion) and baselines (A^+ y, bicubic, Tikhonov) against
// exact answers: measurement consistency for a noiseless y, and the
// closed-form posterior mean of a Gaussian prior (or mixture); PSNR and SSIM
// against closed forms; `tweedie restore` end to end on a Fashion-MNIST test
// image and `tweedie bench restore` on a few. Suites: Operator*, ImageMetrics*,
// Restore*, RestoreCLI*.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli_testing.h"
#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/eval/image_metrics.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/restore/operator.h"
#include "tweedie/restore/solver.h"
#include "tweedie/train/dataset.h"

using namespace tweedie;
using namespace tweedie::testing;

namespace {

torch::Generator seeded(uint64_t s) { return at::make_generator<at::CPUGeneratorImpl>(s); }

const std::vector<int64_t> kShape{2, 8, 8};

std::vector<OperatorPtr> all_operators(const std::vector<int64_t>& shape, double blur_cutoff = 0) {
  return {make_box_mask(shape),
          make_random_mask(shape, 0.5, seeded(3)),
          make_avgpool(shape, 2),
          make_avgpool(shape, 4),
          make_bicubic_downsample(shape, 2),
          make_bicubic_downsample(shape, 4),
          make_gaussian_blur(shape, 0.7, blur_cutoff),
          make_motion_blur(shape, 2.5, 30, blur_cutoff),
          make_random_projection(shape, 0.25, seeded(4)),
          make_identity(shape)};
}

torch::Tensor randn(std::vector<int64_t> lead, const std::vector<int64_t>& shape, uint64_t seed) {
  lead.insert(lead.end(), shape.begin(), shape.end());
  return at::randn(lead, seeded(seed), torch::kFloat64);
}

// The dense matrix of A [M, D], column j = A e_j.
torch::Tensor dense(const Operator& op) {
  const int64_t D = op.in_dim();
  std::vector<int64_t> s{D};
  s.insert(s.end(), op.in_shape().begin(), op.in_shape().end());
  auto eye = torch::eye(D, torch::kFloat64).reshape(s);
  return op.A(eye).reshape({D, op.out_dim()}).t().contiguous();
}

double rel(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).norm() / (b.norm() + 1e-300)).item<double>();
}

// A first-row-sum operator with no SVD: y[c, h] = sum_w x[c, h, w].
class RowSum : public Operator {
 public:
  using Operator::Operator;
  std::string name() const override { return "rowsum"; }
  std::vector<int64_t> out_shape() const override { return {in_shape_[0], in_shape_[1], 1}; }
  torch::Tensor A(const torch::Tensor& x) const override { return x.sum(3, true); }
  torch::Tensor At(const torch::Tensor& y) const override { return y.expand({y.size(0), -1, -1, in_shape_[2]}); }
  torch::Tensor pinv(const torch::Tensor& y) const override { return At(y) / double(in_shape_[2]); }
};

TEST(Operator, AdjointMatchesInnerProducts) {
  for (auto& op : all_operators(kShape)) {
    auto x = randn({3}, kShape, 1), y = randn({3}, op->out_shape(), 2);
    double lhs = (op->A(x) * y).sum().item<double>(), rhs = (x * op->At(y)).sum().item<double>();
    EXPECT_NEAR(lhs, rhs, 1e-10 * std::abs(lhs) + 1e-12) << op->name();
    // As matrices, A^T is the transpose of A: A^T e_j is row j of A.
    const int64_t M = op->out_dim();
    std::vector<int64_t> s{M}, o = op->out_shape();
    s.insert(s.end(), o.begin(), o.end());
    auto rows = op->At(torch::eye(M, torch::kFloat64).reshape(s)).reshape({M, op->in_dim()});
    EXPECT_LT(rel(rows, dense(*op)), 1e-12) << op->name();
  }
}

TEST(Operator, PseudoInverseIdentitiesAndLeastSquares) {
  for (auto& op : all_operators(kShape)) {
    auto x = randn({4}, kShape, 5), y = randn({4}, op->out_shape(), 6);
    EXPECT_LT(rel(op->A(op->pinv(op->A(x))), op->A(x)), 1e-10) << op->name() << ": A A+ A = A";
    EXPECT_LT(rel(op->pinv(op->A(op->pinv(y))), op->pinv(y)), 1e-10) << op->name() << ": A+ A A+ = A+";
    // The minimum-norm least-squares solution from the dense matrix.
    auto Am = dense(*op);
    auto ls = torch::matmul(torch::linalg::pinv(Am), y.reshape({4, -1}).t()).t();
    EXPECT_LT(rel(op->pinv(y).reshape({4, -1}), ls), 1e-9) << op->name();
    // Normal equations A^T (A x - y) = 0 at x = A^+ y.
    auto r = op->At(op->A(op->pinv(y)) - y);
    EXPECT_LT(r.abs().max().item<double>(), 1e-10) << op->name();
  }
}

TEST(Operator, SvdReconstructsTheOperator) {
  for (auto& op : all_operators(kShape)) {
    ASSERT_TRUE(op->has_svd()) << op->name();
    const int64_t N = 3, D = op->in_dim(), M = op->out_dim();
    auto x = randn({N}, kShape, 7), y = randn({N}, op->out_shape(), 8);
    auto vx = op->Vt(x);
    ASSERT_EQ(vx.sizes(), torch::IntArrayRef({N, D})) << op->name();
    EXPECT_LT(rel(op->V(vx), x), 1e-12) << op->name() << ": V V^T = I";
    EXPECT_NEAR(vx.norm().item<double>(), x.norm().item<double>(), 1e-10) << op->name() << ": V orthogonal";
    auto uy = op->Ut(y);
    ASSERT_EQ(uy.sizes(), torch::IntArrayRef({N, M})) << op->name();
    EXPECT_LT(rel(op->U(uy), y), 1e-12) << op->name() << ": U U^T = I";
    EXPECT_NEAR(uy.norm().item<double>(), y.norm().item<double>(), 1e-10) << op->name();
    auto S = op->singulars();
    ASSERT_EQ(S.sizes(), torch::IntArrayRef({M})) << op->name();
    EXPECT_GE(S.min().item<double>(), 0) << op->name();
    // A = U S V^T and A^T = V S^T U^T.
    EXPECT_LT(rel(op->U(vx.slice(1, 0, M) * S), op->A(x)), 1e-10) << op->name();
    auto pad = torch::cat({uy * S, torch::zeros({N, D - M}, torch::kFloat64)}, 1);
    EXPECT_LT(rel(op->V(pad), op->At(y)), 1e-10) << op->name();
    // V's columns are orthonormal as a matrix too (not only norm-preserving on one draw).
    std::vector<int64_t> s{D};
    s.insert(s.end(), kShape.begin(), kShape.end());
    auto Vm = op->Vt(torch::eye(D, torch::kFloat64).reshape(s));
    EXPECT_LT((Vm.mm(Vm.t()) - torch::eye(D, torch::kFloat64)).abs().max().item<double>(), 1e-12) << op->name();
  }
}

TEST(Operator, BlurIsACircularGaussianConvolution) {
  const double sd = 1.3;
  auto op = make_gaussian_blur(kShape, sd);
  auto x = randn({2}, kShape, 9);
  // Direct spatial circular convolution with the periodised kernel.
  auto g = [&](int d) {  // the Gaussian periodised over a period of 8
    double v = 0;
    for (int m = -3; m <= 3; ++m) v += std::exp(-std::pow(d + 8 * m, 2) / (2 * sd * sd));
    return v;
  };
  torch::Tensor y = torch::zeros_like(x);
  double total = 0;
  for (int dy = 0; dy < 8; ++dy)
    for (int dx = 0; dx < 8; ++dx) total += g(dy) * g(dx);
  for (int dy = 0; dy < 8; ++dy)
    for (int dx = 0; dx < 8; ++dx) y += torch::roll(x, {dy, dx}, {2, 3}) * (g(dy) * g(dx) / total);
  EXPECT_LT(rel(op->A(x), y), 1e-12);
  // The transfer function is real and positive for a Gaussian: U = V.
  EXPECT_LT(rel(op->Ut(y), op->Vt(y)), 1e-12);
}

TEST(Operator, BlurCutoffTruncatesThePseudoInverse) {
  auto exact = make_gaussian_blur(kShape, 1.5, 0), cut = make_gaussian_blur(kShape, 1.5, 0.05);
  auto y = randn({2}, kShape, 10);
  auto S = cut->spectral_singulars();
  EXPECT_GT((S == 0).sum().item<int64_t>(), 0);
  EXPECT_EQ((S > 0).sum().item<int64_t>(), (exact->singulars() > 0.05).sum().item<int64_t>());
  // A^+ = V diag(1/s for s > cutoff) U^T.
  auto inv = torch::where(S > 0, 1 / S, torch::zeros_like(S));
  EXPECT_LT(rel(cut->pinv(y), cut->V(cut->Ut(y) * inv)), 1e-12);
  // A A^+ is the projection onto the kept singular vectors.
  auto p = cut->A(cut->pinv(y));
  EXPECT_LT(rel(p, cut->U(cut->Ut(y) * (S > 0).to(torch::kFloat64))), 1e-12);
  EXPECT_LT(rel(cut->A(cut->pinv(cut->A(y))), cut->A(y)), 0.05);
}

TEST(Operator, MasksMissTheRightPixels) {
  auto box = make_box_mask({1, 8, 12});
  auto ones = torch::ones({1, 1, 8, 12}, torch::kFloat64);
  auto m = box->A(ones)[0][0];
  EXPECT_EQ((m == 0).sum().item<int64_t>(), 4 * 6);
  EXPECT_EQ(m.slice(0, 2, 6).slice(1, 3, 9).sum().item<double>(), 0);
  auto r1 = make_random_mask({1, 64, 64}, 0.3, seeded(1)), r2 = make_random_mask({1, 64, 64}, 0.3, seeded(1));
  auto o = torch::ones({1, 1, 64, 64}, torch::kFloat64);
  EXPECT_TRUE(torch::equal(r1->A(o), r2->A(o)));
  EXPECT_NEAR((r1->A(o) == 0).to(torch::kFloat64).mean().item<double>(), 0.3, 0.03);
  // Every channel shares the pixel mask.
  auto rgb = make_random_mask({3, 8, 8}, 0.5, seeded(2))->A(torch::ones({1, 3, 8, 8}));
  EXPECT_TRUE(torch::equal(rgb[0][0], rgb[0][1]) && torch::equal(rgb[0][0], rgb[0][2]));
}

TEST(Operator, MeasurementNoiseOnlyWhereObserved) {
  auto op = make_box_mask({1, 32, 32});
  auto x = torch::zeros({64, 1, 32, 32}, torch::kFloat64);
  auto y = op->measure(x, 0.2, seeded(4));
  auto miss = op->A(torch::ones_like(x)) == 0;
  EXPECT_EQ(y.masked_select(miss).abs().max().item<double>(), 0);
  EXPECT_NEAR(y.masked_select(~miss).std().item<double>(), 0.2, 0.005);
  auto sr = make_avgpool({1, 32, 32}, 4);
  EXPECT_NEAR(sr->measure(x, 0.1, seeded(5)).std().item<double>(), 0.1, 0.005);
  EXPECT_TRUE(torch::equal(sr->measure(x + 1, 0), sr->A(x + 1)));
}

TEST(Operator, ErrorsNameTheCulprit) {
  auto op = make_avgpool({1, 8, 8}, 2);
  try {
    op->A(torch::zeros({2, 1, 8, 9}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("operator sr2 expects x [N, 1, 8, 8]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_avgpool({1, 8, 6}, 4), Error);
  EXPECT_THROW(make_gaussian_blur({1, 8, 8}, -1), Error);
  EXPECT_THROW(make_box_mask({1, 8, 8}, 9, 2), Error);
  EXPECT_THROW(make_random_mask({1, 8, 8}, 1.5, seeded(0)), Error);
  EXPECT_THROW(make_mask({1, 8, 8}, torch::full({8, 8}, 0.5), "m"), Error);
  EXPECT_THROW(op->measure(torch::zeros({1, 1, 8, 8}), -0.1), Error);
  try {
    make_task_operator("sr3", {1, 8, 8});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown task 'sr3' (known: inpaint-box"), std::string::npos) << e.what();
  }
  RowSum rs({1, 4, 4});
  try {
    rs.Vt(torch::zeros({1, 1, 4, 4}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'rowsum' has none"), std::string::npos) << e.what();
  }
}

TEST(Operator, TasksBuildTheirOperators) {
  const std::vector<int64_t> s{1, 28, 28};
  EXPECT_EQ(make_task_operator("sr4", s)->out_shape(), (std::vector<int64_t>{1, 7, 7}));
  EXPECT_EQ(make_task_operator("sr2", s)->out_shape(), (std::vector<int64_t>{1, 14, 14}));
  for (auto& t : task_names()) {
    auto op = make_task_operator(t, s, seeded(0));
    EXPECT_EQ(op->name(), t);
    EXPECT_TRUE(op->has_svd()) << t;
  }
  EXPECT_DOUBLE_EQ(make_task_operator("blur", s)->cutoff(), 0.02);
  EXPECT_DOUBLE_EQ(make_task_operator("motion-blur", s)->cutoff(), 0.05);
  EXPECT_EQ(make_task_operator("sr4-bicubic", s)->out_shape(), (std::vector<int64_t>{1, 7, 7}));
  EXPECT_EQ(make_task_operator("cs", s, seeded(0))->out_shape(), (std::vector<int64_t>{196}));
  EXPECT_EQ(make_task_operator("sr4-bicubic", s)->sr_factor(), 4);
  EXPECT_EQ(make_task_operator("sr2", s)->sr_factor(), 2);
  EXPECT_EQ(make_task_operator("blur", s)->sr_factor(), 0);
  for (auto& t : task_names())
    EXPECT_EQ(make_task_operator(t, s, seeded(0))->is_mask(), t.rfind("inpaint", 0) == 0) << t;
}

TEST(Operator, BicubicIsKeysCubicStretchedByTheFactor) {
  // An interior row of the x2 matrix: taps at (j - c) / 2 = +-0.25, +-0.75, +-1.25, +-1.75 of
  // the Keys cubic (a = -0.5), normalised; every row sums to 1, so constants are kept.
  auto keys = [](double t) {
    t = std::abs(t);
    return t <= 1 ? 1.5 * t * t * t - 2.5 * t * t + 1 : t < 2 ? -0.5 * t * t * t + 2.5 * t * t - 4 * t + 2 : 0.0;
  };
  auto B = bicubic_downsample_matrix(16, 2);
  ASSERT_EQ(B.sizes(), torch::IntArrayRef({8, 16}));
  std::vector<double> w;
  for (double d : {-1.75, -1.25, -0.75, -0.25, 0.25, 0.75, 1.25, 1.75}) w.push_back(keys(d));
  auto want = torch::tensor(w, torch::kFloat64);
  want = want / want.sum();
  EXPECT_LT(rel(B[4].slice(0, 5, 13), want), 1e-14);  // row 4 is centred at 8.5
  EXPECT_EQ(B[4].slice(0, 0, 5).abs().sum().item<double>(), 0);
  EXPECT_LT((B.sum(1) - 1).abs().max().item<double>(), 1e-14);
  // Borders reflect: row 0 puts the taps at -1..-3 back onto 0..2, still summing to 1.
  EXPECT_GT(B[0][0].item<double>(), B[4][8].item<double>());
  auto op = make_bicubic_downsample({1, 16, 8}, 4);
  EXPECT_EQ(op->out_shape(), (std::vector<int64_t>{1, 4, 2}));
  auto c = torch::full({1, 1, 16, 8}, 0.3, torch::kFloat64);
  EXPECT_LT((op->A(c) - 0.3).abs().max().item<double>(), 1e-14);
  EXPECT_LT((op->pinv(op->A(c)) - 0.3).abs().max().item<double>(), 1e-12);  // constants are in the row space
  EXPECT_THROW(make_bicubic_downsample({1, 16, 6}, 4), Error);
}

TEST(Operator, MotionBlurKernelIsALine) {
  for (double angle : {0.0, 90.0, 30.0, 135.0}) {
    const double L = 6;
    auto k = motion_blur_kernel(32, 32, L, angle);
    EXPECT_NEAR(k.sum().item<double>(), 1, 1e-14);
    EXPECT_GE(k.min().item<double>(), 0);
    EXPECT_TRUE(torch::equal(k, torch::roll(k.flip({0, 1}), {1, 1}, {0, 1}))) << "even";
    // Second moments about the origin (offsets -16..15): the long axis is the direction
    // (cos a, -sin a) on screen, of variance ~ L^2 / 12 (a uniform segment).
    auto d = torch::arange(32, torch::kFloat64);
    d = torch::where(d >= 16, d - 32, d);
    auto dy = d.reshape({32, 1}).expand({32, 32}), dx = d.reshape({1, 32}).expand({32, 32});
    const double a = angle * M_PI / 180, ux = std::cos(a), uy = -std::sin(a);
    auto along = dx * ux + dy * uy, across = -dx * uy + dy * ux;
    EXPECT_NEAR((k * along * along).sum().item<double>(), L * L / 12, 0.25) << angle;
    EXPECT_LT((k * across * across).sum().item<double>(), 0.2) << angle;
    EXPECT_NEAR((k * along).sum().item<double>(), 0, 1e-12) << angle;
  }
  // Horizontal: only row 0, columns -3..3.
  auto h = motion_blur_kernel(16, 16, 6, 0);
  EXPECT_EQ(h.slice(0, 1).abs().sum().item<double>(), 0);
  EXPECT_EQ(h[0].slice(0, 4, 13).abs().sum().item<double>(), 0);
  EXPECT_THROW(motion_blur_kernel(16, 16, -1, 0), Error);
  EXPECT_THROW(motion_blur_kernel(16, 16, 20, 0), Error);
  // The line's transfer function is real with zeros and negative lobes: the SVD's signs and cutoff.
  auto op = make_motion_blur({1, 28, 28}, 7, 45, 0.05);
  auto S = op->singulars();
  EXPECT_LT(S.min().item<double>(), 0.05);
  EXPECT_GT((op->spectral_singulars() == 0).sum().item<int64_t>(), 0);
}

TEST(Operator, CircularBlurTakesEvenKernelsOnly) {
  auto k = torch::zeros({8, 8}, torch::kFloat64);
  k[0][0] = 0.5, k[0][1] = 0.5;  // a one-sided kernel: its transfer function is complex
  EXPECT_NE(error_of([&] { make_circular_blur({1, 8, 8}, k, "odd"); }).find("odd: the kernel must be even"),
            std::string::npos);
  EXPECT_NE(error_of([&] { make_circular_blur({1, 8, 8}, torch::ones({8, 7}), "k"); }).find("k: the kernel must be [8, 8]"),
            std::string::npos);
  k[7][0] = 0.5;
  k[0][7] = 0.5;
  k[1][0] = 0.5;  // now even: (0, +-1) and (+-1, 0)
  auto op = make_circular_blur({1, 8, 8}, k, "cross");
  auto x = randn({1}, {1, 8, 8}, 3);
  auto want = x * 0.5 + (torch::roll(x, {1}, {3}) + torch::roll(x, {-1}, {3}) + torch::roll(x, {1}, {2}) +
                         torch::roll(x, {-1}, {2})) * 0.5;
  EXPECT_LT(rel(op->A(x), want), 1e-12);
  EXPECT_EQ(op->name(), "cross");
}

TEST(Operator, RandomProjectionIsSeededAndScaled) {
  const std::vector<int64_t> s{1, 16, 16};
  auto a = make_random_projection(s, 0.25, seeded(5)), b = make_random_projection(s, 0.25, seeded(5)),
       c = make_random_projection(s, 0.25, seeded(6));
  EXPECT_EQ(a->out_shape(), (std::vector<int64_t>{64}));
  auto x = randn({2}, s, 1);
  EXPECT_TRUE(torch::equal(a->A(x), b->A(x)));
  EXPECT_FALSE(torch::equal(a->A(x), c->A(x)));
  // Rows of unit expected norm: |A x|^2 ~ m / D |x|^2 (over many directions).
  auto xs = randn({200}, s, 2);
  const double ratio = (a->A(xs).pow(2).sum() / xs.pow(2).sum()).item<double>();
  EXPECT_NEAR(ratio, 0.25, 0.02);
  EXPECT_EQ(make_random_projection(s, 0.001, seeded(0))->out_dim(), 1);
  EXPECT_THROW(make_random_projection(s, 0, seeded(0)), Error);
  EXPECT_THROW(make_random_projection(s, 1.5, seeded(0)), Error);
}

// ---- PSNR and SSIM -------------------------------------------------------------

TEST(ImageMetrics, PsnrOfAKnownMse) {
  auto a = torch::rand({3, 1, 12, 12}, torch::kFloat64);
  auto p = psnr(a, a + 0.1);  // MSE = 0.01: 20 dB
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(p[i].item<double>(), 20, 1e-9);
  EXPECT_TRUE(std::isinf(psnr(a, a)[0].item<double>()));
  auto b = a.clone();
  b[1].fill_(0);
  b[1][0][0][0] = 1;  // one wrong pixel in 144 against an all-zero image: MSE 1/144
  EXPECT_NEAR(psnr(torch::zeros_like(a), b)[1].item<double>(), 10 * std::log10(144.0), 1e-9);
}

TEST(ImageMetrics, SsimClosedForms) {
  const double c1 = 1e-4;  // (0.01 * 1)^2
  auto x = torch::rand({2, 3, 16, 20}, torch::kFloat64);
  auto one = ssim(x, x);
  EXPECT_NEAR(one[0].item<double>(), 1, 1e-12);
  EXPECT_NEAR(one[1].item<double>(), 1, 1e-12);
  // Constant images a and b: no variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
  for (auto [a, b] : {std::pair{0.2, 0.7}, {0.5, 0.5}, {0.0, 1.0}}) {
    auto s = ssim(torch::full({1, 1, 11, 11}, a, torch::kFloat64), torch::full({1, 1, 11, 11}, b, torch::kFloat64));
    EXPECT_NEAR(s[0].item<double>(), (2 * a * b + c1) / (a * a + b * b + c1), 1e-12) << a << " " << b;
  }
  auto flat = torch::full({1, 1, 11, 11}, 0.4, torch::kFloat64);
  auto noise = torch::rand({1, 1, 11, 11}, torch::kFloat64) * 0.1;
  // Symmetric and below 1 for different images.
  auto y = x + torch::randn_like(x) * 0.1;
  EXPECT_NEAR((ssim(x, y) - ssim(y, x)).abs().max().item<double>(), 0, 1e-12);
  EXPECT_LT(ssim(x, y).max().item<double>(), 0.99);
  // x against -x around the mean flips the covariance term's sign.
  EXPECT_LT(ssim(flat + noise, flat - noise)[0].item<double>(), 0);
  EXPECT_NE(error_of([] { ssim(torch::zeros({1, 1, 10, 10}), torch::zeros({1, 1, 10, 10})); }).find("at least 11x11"),
            std::string::npos);
  EXPECT_NE(error_of([] { psnr(torch::zeros({1, 1, 10, 10}), torch::zeros({1, 1, 10, 9})); }).find("same shape"),
            std::string::npos);
}

TEST(ImageMetrics, SsimIsTheMeanOverWindowsOfWangEtAl) {
  // Brute force: every 11x11 window position that fits, Gaussian weights, the SSIM formula.
  auto x = torch::rand({1, 2, 13, 14}, torch::kFloat64), y = (x + torch::rand_like(x) * 0.3).clamp(0, 1);
  std::vector<double> g(11);
  double gs = 0;
  for (int i = 0; i < 11; ++i) gs += g[i] = std::exp(-(i - 5) * (i - 5) / (2 * 1.5 * 1.5));
  double total = 0;
  int count = 0;
  auto X = x.accessor<double, 4>(), Y = y.accessor<double, 4>();
  for (int c = 0; c < 2; ++c)
    for (int r = 0; r + 11 <= 13; ++r)
      for (int q = 0; q + 11 <= 14; ++q) {
        double mx = 0, my = 0, xx = 0, yy = 0, xy = 0;
        for (int i = 0; i < 11; ++i)
          for (int j = 0; j < 11; ++j) {
            const double w = g[i] * g[j] / (gs * gs), a = X[0][c][r + i][q + j], b = Y[0][c][r + i][q + j];
            mx += w * a, my += w * b, xx += w * a * a, yy += w * b * b, xy += w * a * b;
          }
        const double vx = xx - mx * mx, vy = yy - my * my, cxy = xy - mx * my;
        total += (2 * mx * my + 1e-4) * (2 * cxy + 9e-4) / ((mx * mx + my * my + 1e-4) * (vx + vy + 9e-4));
        ++count;
      }
  EXPECT_EQ(count, 2 * 3 * 4);
  EXPECT_NEAR(ssim(x, y)[0].item<double>(), total / count, 1e-12);
}

// ---- solvers ----------------------------------------------------------------

// A Gaussian prior N(mu, diag(var)) on [1, 6, 6] images as a one-component mixture.
GaussianMixture gaussian_prior(const std::vector<int64_t>& shape, uint64_t seed) {
  auto g = seeded(seed);
  int64_t D = 1;
  for (auto v : shape) D *= v;
  GaussianMixture m;
  m.shape = shape;
  m.weights = torch::ones({1}, torch::kFloat64);
  m.means = (at::rand({1, D}, g, torch::kFloat64) - 0.5);
  m.variances = at::rand({1, D}, g, torch::kFloat64) * 0.45 + 0.05;
  return m;
}

// Closed-form posterior mean of x ~ N(mu, Sigma) given y = A x + sigma_y n (n
// only on the range of A): mu + Sigma A^T (A Sigma A^T + sigma_y^2 P)^+ (y - A mu).
torch::Tensor posterior_mean(const Operator& op, const torch::Tensor& mu, const torch::Tensor& var,
                             const torch::Tensor& y, double sigma_y) {
  auto A = dense(op);
  auto Sig = torch::diag(var);
  auto P = torch::matmul(A, torch::linalg::pinv(A));  // projection onto the range of A
  auto K = torch::matmul(Sig, torch::matmul(A.t(), torch::linalg::pinv(A.mm(Sig).mm(A.t()) + P * sigma_y * sigma_y)));
  auto r = y.reshape({-1}).to(torch::kFloat64) - A.mv(mu);
  return mu + K.mv(r);
}
torch::Tensor posterior_mean(const Operator& op, const GaussianMixture& m, const torch::Tensor& y, double sigma_y) {
  return posterior_mean(op, m.means[0], m.variances[0], y, sigma_y);
}

// The standard normal prior on `shape`.
GaussianMixture standard_normal(const std::vector<int64_t>& shape) {
  GaussianMixture m = gaussian_prior(shape, 0);
  m.means.zero_();
  m.variances.fill_(1.0);
  return m;
}

struct Solved {
  torch::Tensor x;  // [N, ...]
  int nfe;
};

Solved solve(const std::string& solver, Denoiser& d, const OperatorPtr& op, const torch::Tensor& y1, double sigma_y,
             int64_t n, int steps, uint64_t seed, RestoreOptions o = {}, const std::string& schedule = "karras") {
  auto sig = make_schedule(schedule, d.process(), steps);
  auto gen = seeded(seed);
  std::vector<int64_t> s{n};
  s.insert(s.end(), op->in_shape().begin(), op->in_shape().end());
  auto x = at::randn(s, gen, y1.options()) * sig[0];
  SamplerRun run(d, sig, {}, {}, gen);
  std::vector<int64_t> ys(size_t(y1.dim()), -1);
  ys[0] = n;
  Measurement m{op, y1.expand(ys).contiguous(), sigma_y};
  auto out = run_restore(find_restore_solver(solver), run, m, x, o);
  return {out, run.nfe};
}

TEST(Restore, TimeTravelPathIsRePaints) {
  // RePaint's get_schedule_jump(6, 2, 2) = [5,4,3,2,3,4,3,2,1,0,1,2,1,0,-1], as level indices 5 - t.
  EXPECT_EQ(time_travel_path(6, 2, 2), (std::vector<int>{0, 1, 2, 3, 2, 1, 2, 3, 4, 5, 4, 3, 4, 5, 6}));
  EXPECT_EQ(time_travel_path(4, 1, 1), (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(time_travel_path(4, 5, 3), (std::vector<int>{0, 1, 2, 3, 4}));  // L >= steps: no jumps
  auto p = time_travel_path(20, 5, 3);
  int down = 0;
  for (size_t i = 1; i < p.size(); ++i) {
    EXPECT_EQ(std::abs(p[i] - p[i - 1]), 1);
    down += p[i] > p[i - 1];
  }
  EXPECT_EQ(down, 20 + 3 * 2 * 5);  // jumps at t = 0, 5, 10 (< 15), each 2 extra passes of 5 steps
  RestoreOptions o;
  o.set("travel-length", 5); o.set("travel-repeat", 3);
  EXPECT_EQ(restore_nfe(find_restore_solver("ddnm+"), 20, o), down);
  EXPECT_EQ(restore_nfe(find_restore_solver("ddnm"), 20, {}), 20);
  EXPECT_EQ(error_of([&] { restore_nfe(find_restore_solver("ddnm"), 20, o); }), "ddnm: --travel-length does not apply");
  EXPECT_THROW(time_travel_path(10, 0, 2), Error);
}

TEST(Restore, NoiselessSolutionsAreConsistentWithTheMeasurement) {
  const std::vector<int64_t> shape{1, 8, 8};
  auto prior = gaussian_prior(shape, 1);
  GMMDenoiser d(prior, make_process("vp:cosine"));
  auto truth = prior.sample(1, seeded(2)).to(torch::kFloat64);
  for (auto& op : all_operators(shape)) {
    auto y = op->A(truth);
    std::vector<std::string> solvers{"ddnm", "ddnm+", "ddrm", "mcg", "pinv"};
    if (op->is_mask()) solvers.insert(solvers.end(), {"repaint", "blended"});
    for (const std::string& solver : solvers) {
      Solved r = solve(solver, d, op, y, 0, 8, 10, 3);
      const double err = (op->A(r.x) - y).norm().item<double>() / std::sqrt(8.0);
      EXPECT_LT(err, 1e-8 * (1 + y.norm().item<double>())) << solver << " on " << op->name();
      EXPECT_TRUE(torch::isfinite(r.x).all().item<bool>());
    }
  }
}

TEST(Restore, SameSeedSameBits) {
  const std::vector<int64_t> shape{1, 6, 6};
  auto prior = gaussian_prior(shape, 4);
  GMMDenoiser d(prior, make_process("vp"));
  auto op = make_avgpool(shape, 2);
  auto y = op->measure(prior.sample(1, seeded(1)).to(torch::kFloat64), 0.1, seeded(2));
  for (std::string solver : {"ddnm", "ddnm+", "ddrm"}) {
    auto a = solve(solver, d, op, y, 0.1, 4, 8, 9).x, b = solve(solver, d, op, y, 0.1, 4, 8, 9).x;
    EXPECT_TRUE(torch::equal(a, b)) << solver;
    EXPECT_FALSE(torch::equal(a, solve(solver, d, op, y, 0.1, 4, 8, 10).x)) << solver;
  }
}

// Mean of many restorations of one measurement vs the exact posterior mean:
// the distance left as a fraction of the prior-to-posterior distance, and the
// largest deviation in Monte-Carlo standard errors (coordinates the
// measurement pins down exactly must match to 1e-9 instead).
struct Gap {
  double rel, max_z, pinv_rel;  // pinv_rel: the same distance for A^+ y
};
Gap posterior_mean_gap(const std::string& solver, const std::string& process, const OperatorPtr& op, double sigma_y,
                       int steps, RestoreOptions o = {}, bool standard = false) {
  const std::vector<int64_t>& shape = op->in_shape();
  auto prior = standard ? standard_normal(shape) : gaussian_prior(shape, 7);
  GMMDenoiser d(prior, make_process(process));
  auto truth = prior.sample(1, seeded(8)).to(torch::kFloat64);
  auto y = op->measure(truth, sigma_y, seeded(9));
  auto exact = posterior_mean(*op, prior, y, sigma_y);
  Solved r = solve(solver, d, op, y, sigma_y, 4000, steps, 10, o);
  auto xs = r.x.reshape({r.x.size(0), -1});
  auto mean = xs.mean(0), se = xs.std(0) / std::sqrt(double(xs.size(0)));
  auto dev = (mean - exact).abs();
  auto pinned = se < 1e-9;
  double max_z = torch::where(pinned, (dev > 1e-9).to(torch::kFloat64) * 1e9, dev / se.clamp_min(1e-9))
                     .max()
                     .item<double>();
  auto base = (prior.means[0] - exact).norm();
  Gap g{((mean - exact).norm() / base).item<double>(), max_z,
        ((op->pinv(y).reshape({-1}) - exact).norm() / base).item<double>()};
  std::printf("[ %s on %s, %s, sigma_y %g, %d steps: mean off by %.4f of the prior-to-posterior distance "
              "(A^+y: %.4f), max %.2f standard errors ]\n",
              solver.c_str(), op->name().c_str(), process.c_str(), sigma_y, steps, g.rel, g.pinv_rel, g.max_z);
  return g;
}

TEST(Restore, GaussianPriorMaskNoiselessApproachesThePosteriorMean) {
  // Noiseless masks on a diagonal Gaussian: the posterior is y on the observed
  // pixels and the prior elsewhere, and all three solvers sample it without
  // bias (measured: within 2.7 standard errors of 4000 runs, 0.5-1.3 %).
  const std::vector<int64_t> shape{1, 6, 6};
  for (auto& op : {make_box_mask(shape), make_random_mask(shape, 0.5, seeded(1))}) {
    for (std::string solver : {"ddnm", "ddnm+", "ddrm"}) {
      for (std::string proc : {"vp:cosine", "flow"}) {
        Gap g = posterior_mean_gap(solver, proc, op, 0, 30);
        EXPECT_LT(g.max_z, 4.5) << solver << " " << proc << " " << op->name();
        EXPECT_LT(g.rel, 0.03) << solver << " " << proc << " " << op->name();
      }
    }
  }
}

TEST(Restore, GaussianPriorNoisyMeasurementsApproachThePosteriorMean) {
  // With measurement noise DDNM+ and DDRM are approximations (both plug the
  // unconditional denoiser into a step built for the noisy y), so this checks
  // that they land much closer to the posterior mean than A^+ y does.
  // Measured at 50 steps, sigma_y 0.3: DDRM 1.5-1.8 %, DDNM+ (r = 2) 8 %,
  // against 32-80 % for A^+ y.
  const std::vector<int64_t> shape{1, 6, 6};
  for (auto& op : {make_random_mask(shape, 0.5, seeded(1)), make_identity(shape)}) {
    for (std::string solver : {"ddnm+", "ddrm"}) {
      Gap g = posterior_mean_gap(solver, "vp:cosine", op, 0.3, 50);
      EXPECT_LT(g.rel, 0.15) << solver << " " << op->name();
      EXPECT_LT(g.rel, 0.4 * g.pinv_rel) << solver << " " << op->name();
    }
  }
}

TEST(Restore, DdnmPlusWithoutTimeTravelIsDdrmOnMasksAndIdentity) {
  // With U = V = I, singular values 0/1 and sigma_y > 0, DDNM+'s noise-aware
  // step and DDRM's (eta_b = 1) are the same formulas, written independently
  // in ddnm.cpp and ddrm.cpp: the same seed must give the same restoration.
  const std::vector<int64_t> shape{1, 6, 6};
  auto prior = gaussian_prior(shape, 2);
  GMMDenoiser d(prior, make_process("vp:cosine"));
  RestoreOptions o;
  o.set("travel-repeat", 1);
  for (auto& op : {make_box_mask(shape), make_identity(shape)}) {
    const double sy = 0.2;
    auto y = op->measure(prior.sample(1, seeded(3)).to(torch::kFloat64), sy, seeded(4));
    auto a = solve("ddnm+", d, op, y, sy, 16, 12, 5, o).x, b = solve("ddrm", d, op, y, sy, 16, 12, 5).x;
    EXPECT_LT((a - b).abs().max().item<double>(), 1e-10) << op->name();
    // Time travel changes the result.
    EXPECT_GT((solve("ddnm+", d, op, y, sy, 16, 12, 5).x - b).abs().max().item<double>(), 1e-3) << op->name();
  }
}

// A Gaussian-mixture denoiser that hides its graph from autograd.
class Opaque : public Denoiser {
 public:
  explicit Opaque(GMMDenoiser d) : d_(std::move(d)) {}
  const Process& process() const override { return d_.process(); }
  Prediction predict(const torch::Tensor& x, double s, const Cond& c) override {
    torch::NoGradGuard no_grad;
    return d_.predict(x.detach(), s, c);
  }

 private:
  GMMDenoiser d_;
};

TEST(Restore, PigdmOneStepIsTheExactConditionalMeanOfAStandardNormalPrior) {
  // Under N(0, I), p(x0 | x) = N(x / (1 + s^2), r^2 I) exactly (VP, r^2 = s^2 / (1 + s^2)), so
  // PiGDM's guided x0 is E[x0 | x, y], which one step to 0 returns.
  const std::vector<int64_t> shape{1, 6, 6};
  GMMDenoiser d(standard_normal(shape), make_process("vp"));
  const double s0 = 0.8, r2 = s0 * s0 / (1 + s0 * s0);
  auto x = randn({3}, shape, 11) * s0;
  for (auto& op : {make_box_mask(shape), make_avgpool(shape, 2), make_gaussian_blur(shape, 0.7), make_identity(shape)}) {
    for (double sy : {0.0, 0.2}) {
      auto y = op->measure(randn({3}, shape, 12), sy, seeded(13));
      SamplerRun run(d, {s0, 0}, {}, {}, seeded(1));
      auto out = run_restore(find_restore_solver("pigdm"), run, {op, y, sy}, x);
      for (int i = 0; i < 3; ++i) {
        auto mu = (x[i] / (1 + s0 * s0)).reshape({-1});
        auto want = posterior_mean(*op, mu, torch::full_like(mu, r2), y[i], sy);
        EXPECT_LT(rel(out[i].reshape({-1}), want), 1e-9) << op->name() << " sigma_y " << sy;
      }
    }
  }
}

TEST(Restore, PigdmSamplesThePosteriorMeanOfAStandardNormalPrior) {
  // Measured: within 3 standard errors of 4000 runs on every case.
  const std::vector<int64_t> shape{1, 6, 6};
  for (auto& op : {make_avgpool(shape, 2), make_gaussian_blur(shape, 1.0), make_random_mask(shape, 0.5, seeded(1))}) {
    for (double sy : {0.0, 0.2}) {
      for (std::string proc : {"vp:cosine", "flow"}) {
        Gap g = posterior_mean_gap("pigdm", proc, op, sy, 20, {}, true);
        EXPECT_LT(g.max_z, 4.5) << op->name() << " " << proc << " sigma_y " << sy;
      }
    }
  }
}

TEST(Restore, DpsStepIsTheGradientOfTheResidual) {
  // One step to 0: x' = x0 - zeta J^T A^T (A x0 - y) / |A x0 - y| / model_scale(s0), with J =
  // diag(v / (v + s^2)) the Jacobian of a diagonal Gaussian's posterior mean (VP, a = 1).
  const std::vector<int64_t> shape{1, 6, 6};
  auto prior = gaussian_prior(shape, 3);
  auto proc = make_process("vp");
  GMMDenoiser d(prior, proc);
  const double s0 = 0.8, zeta = 0.5;
  auto op = make_avgpool(shape, 2);
  auto x = randn({2}, shape, 14) * s0;
  auto y = op->measure(randn({2}, shape, 15), 0.1, seeded(16));
  SamplerRun run(d, {s0, 0}, {}, {}, seeded(1));
  RestoreOptions o;
  o.set("zeta", zeta);
  auto out = run_restore(find_restore_solver("dps"), run, {op, y, 0.1}, x, o);
  auto k = (prior.variances[0] / (prior.variances[0] + s0 * s0)).reshape(shape);
  auto x0 = prior.means[0].reshape(shape) + k * (x - prior.means[0].reshape(shape));
  auto r = op->A(x0) - y;
  auto norm = r.flatten(1).norm(2, 1).reshape({2, 1, 1, 1});
  auto want = x0 - k * op->At(r) / norm * (zeta / proc->model_scale(s0));
  EXPECT_LT(rel(out, want), 1e-10);
}

TEST(Restore, DpsWithoutGuidanceIsDdpmAndWithItApproachesThePosterior) {
  const std::vector<int64_t> shape{1, 6, 6};
  auto prior = gaussian_prior(shape, 5);
  GMMDenoiser d(prior, make_process("vp:cosine"));
  auto op = make_avgpool(shape, 2);
  auto y = op->measure(prior.sample(1, seeded(2)).to(torch::kFloat64), 0.1, seeded(3));
  // zeta = 0: DDIM with eta 1 (the DDPM posterior), bit for bit.
  RestoreOptions off;
  off.set("zeta", 0);
  auto a = solve("dps", d, op, y, 0.1, 8, 10, 4, off).x;
  auto sig = make_schedule("karras", d.process(), 10);
  auto gen = seeded(4);
  auto x = at::randn({8, 1, 6, 6}, gen, torch::kFloat64) * sig[0];
  SamplerOptions so;
  so.eta = 1;
  SamplerRun run(d, sig, {}, so, gen);
  EXPECT_TRUE(torch::equal(a, run_sampler(find_sampler("ddim"), run, x)));
  // With guidance the samples move most of the way to the posterior mean (measured: 0.21 of the
  // prior-to-posterior distance left at 50 steps; A^+ y is off by 1.44) and fit y.
  Gap g = posterior_mean_gap("dps", "vp:cosine", op, 0.1, 50);
  EXPECT_LT(g.rel, 0.4);
  Solved r = solve("dps", d, op, y, 0.1, 200, 50, 6);
  const double fit = (op->A(r.x) - y).flatten(1).norm(2, 1).mean().item<double>() / std::sqrt(double(op->out_dim()));
  const double free = (op->A(a) - y).flatten(1).norm(2, 1).mean().item<double>() / std::sqrt(double(op->out_dim()));
  std::printf("[ dps residual per measured value: %.4f guided, %.4f unguided (sigma_y 0.1) ]\n", fit, free);
  EXPECT_LT(fit, 0.15);
  EXPECT_LT(fit, 0.5 * free);
}

TEST(Restore, GradientSolversRejectNonDifferentiableDenoisers) {
  const std::vector<int64_t> shape{1, 4, 4};
  auto prior = gaussian_prior(shape, 1);
  Opaque d(GMMDenoiser(prior, make_process("vp")));
  auto op = make_avgpool(shape, 2);
  auto y = op->A(prior.sample(1, seeded(0)).to(torch::kFloat64));
  for (std::string solver : {"pigdm", "dps", "mcg"}) {
    try {
      solve(solver, d, op, y, 0, 2, 3, 1);
      ADD_FAILURE() << solver;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(solver + ": the denoiser is not differentiable"), std::string::npos)
          << e.what();
    }
  }
  GMMDenoiser ok(prior, make_process("vp"));
  auto rs = std::make_shared<RowSum>(shape);
  auto yr = rs->A(prior.sample(1, seeded(0)).to(torch::kFloat64));
  EXPECT_THROW(solve("pigdm", ok, rs, yr, 0.1, 2, 3, 1), Error);  // noisy PiGDM needs the SVD
  EXPECT_NO_THROW(solve("pigdm", ok, rs, yr, 0, 2, 3, 1));        // noiseless needs only A^+
  EXPECT_NO_THROW(solve("dps", ok, rs, yr, 0.1, 2, 3, 1));        // DPS needs only A
  EXPECT_NO_THROW(solve("mcg", ok, rs, yr, 0.1, 2, 3, 1));        // MCG needs A and A^+
}

TEST(Restore, SolversRejectBadInput) {
  const std::vector<int64_t> shape{1, 4, 4};
  auto prior = gaussian_prior(shape, 1);
  GMMDenoiser d(prior, make_process("vp"));
  auto rs = std::make_shared<RowSum>(shape);
  auto y = rs->A(prior.sample(1, seeded(0)).to(torch::kFloat64));
  auto msg = [&](const std::string& solver, double sigma_y, RestoreOptions o = {}) -> std::string {
    try {
      solve(solver, d, rs, y, sigma_y, 2, 4, 1, o);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(msg("ddrm", 0).find("ddrm needs an operator with a known SVD; 'rowsum' has none"), std::string::npos)
      << msg("ddrm", 0);
  EXPECT_NE(msg("ddnm+", 0.1).find("ddnm+ with sigma_y > 0 needs an operator with a known SVD"), std::string::npos);
  EXPECT_EQ(msg("ddnm", 0), "");  // DDNM needs only A and A^+
  EXPECT_EQ(msg("ddnm+", 0), "");
  EXPECT_NE(msg("ddnm", -1).find("sigma_y must be >= 0"), std::string::npos);
  RestoreOptions bad;
  bad.set("eta", 1.5);
  EXPECT_NE(msg("ddnm", 0, bad).find("eta must be in [0, 1]"), std::string::npos);
  bad = RestoreOptions{};
  bad.set("eta-b", 2);
  EXPECT_NE(msg("ddrm", 0, bad).find("ddrm: --eta-b must be in [0, 1] (got 2)"), std::string::npos);
  bad = RestoreOptions{};
  bad.set("travel-length", 0);
  EXPECT_NE(msg("ddnm+", 0, bad).find("ddnm+: --travel-length must be an integer >= 1 (got 0)"), std::string::npos);
  EXPECT_NE([] {
    try {
      find_restore_solver("dps2");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  }().find("unknown solver 'dps2' (known: bicubic, blended, ddnm, ddnm+, ddrm, dps, mcg, pigdm, pinv, psld, "
           "repaint, resample, tikhonov)"), std::string::npos);
  // A measurement of the wrong shape names the operator.
  auto sig = make_schedule("karras", d.process(), 4);
  SamplerRun run(d, sig, {}, {}, seeded(1));
  Measurement m{make_avgpool(shape, 2), torch::zeros({2, 1, 4, 4}, torch::kFloat64), 0};
  EXPECT_THROW(run_restore(find_restore_solver("ddnm"), run, m, torch::zeros({2, 1, 4, 4}, torch::kFloat64)), Error);
}

// ---- MCG, RePaint, Blended Diffusion, baselines ------------------------------

TEST(Restore, McgIsDpsThenTheProjection) {
  // One step to 0 from the same state: MCG = the DPS step, then x + A^+ (y - A x) (no noise at s' = 0).
  const std::vector<int64_t> shape{1, 6, 6};
  GMMDenoiser d(gaussian_prior(shape, 3), make_process("vp"));
  auto x = randn({2}, shape, 14) * 0.8;
  for (auto& op : {make_avgpool(shape, 2), make_random_projection(shape, 0.3, seeded(2))}) {
    auto y = op->measure(randn({2}, shape, 15), 0.1, seeded(16));
    SamplerRun r1(d, {0.8, 0}, {}, {}, seeded(1)), r2(d, {0.8, 0}, {}, {}, seeded(1));
    auto dps = run_restore(find_restore_solver("dps"), r1, {op, y, 0.1}, x);
    auto mcg = run_restore(find_restore_solver("mcg"), r2, {op, y, 0.1}, x);
    EXPECT_LT(rel(mcg, dps + op->pinv(y - op->A(dps))), 1e-12) << op->name();
    EXPECT_LT(rel(op->A(mcg), y), 1e-10) << op->name();  // the projection fits y, noise and all
  }
}

TEST(Restore, McgApproachesThePosteriorMean) {
  // A Gaussian prior with noiseless 2x super-resolution: the posterior couples the pixels of a
  // block, which MCG's gradient step and projection approximate (not exactly: the mean is off by
  // several standard errors). Measured at 50 steps: 6.7 % of the prior-to-posterior distance
  // left, against 120 % for A^+ y.
  const std::vector<int64_t> shape{1, 6, 6};
  Gap g = posterior_mean_gap("mcg", "vp:cosine", make_avgpool(shape, 2), 0, 50);
  EXPECT_LT(g.rel, 0.1);
  EXPECT_LT(g.rel, 0.1 * g.pinv_rel);
}

// A two-component mixture on [1, 4, 4] (means +-mu, small variances): the observed pixels say
// which component the image came from, and so what the missing pixels should be. The exact
// posterior mean of x given the observed pixels (noiseless mask):
// w_k ~ pi_k N(y_obs; mu_k, v_k), E[x_miss | y] = sum_k w_k mu_k.
GaussianMixture two_component_prior(const std::vector<int64_t>& shape) {
  GaussianMixture m;
  m.shape = shape;
  const int64_t D = shape[0] * shape[1] * shape[2];
  m.weights = torch::tensor({0.5, 0.5}, torch::kFloat64);
  auto mu = torch::linspace(0.3, 0.9, D, torch::kFloat64);
  m.means = torch::stack({mu, -mu});
  m.variances = torch::full({2, D}, 0.6, torch::kFloat64);
  return m;
}
torch::Tensor mixture_posterior_mean(const GaussianMixture& m, const Operator& op, const torch::Tensor& y) {
  auto obs = op.A(torch::ones({1, m.shape[0], m.shape[1], m.shape[2]}, torch::kFloat64)).reshape({-1}) > 0;
  auto yv = y.reshape({-1}).to(torch::kFloat64);
  auto ll = (-(yv - m.means).pow(2) / (2 * m.variances) - 0.5 * torch::log(m.variances)) * obs;
  auto w = torch::softmax(ll.sum(1) + torch::log(m.weights), 0);
  return torch::where(obs, yv, (w.unsqueeze(1) * m.means).sum(0));
}

TEST(Restore, RepaintResamplingApproachesTheMixturePosteriorMean) {
  // Plain blending (RePaint without resampling = Blended Diffusion) generates the missing
  // pixels from noised known pixels that carry little information early on, and is biased
  // towards the prior; RePaint's resampling moves the mean of many runs towards the
  // closed-form posterior mean. Measured with 4000 runs at 20 steps, jump length 2 (distance left
  // as a fraction of the prior-to-posterior distance): r = 1: 0.27, r = 3: 0.093, r = 6: 0.033.
  const std::vector<int64_t> shape{1, 4, 4};
  auto prior = two_component_prior(shape);
  GMMDenoiser d(prior, make_process("vp:cosine"));
  auto op = make_box_mask(shape, 4, 2);  // the middle two columns missing
  auto truth = prior.sample(1, seeded(8)).to(torch::kFloat64);
  auto y = op->A(truth);
  auto exact = mixture_posterior_mean(prior, *op, y);
  auto base = (prior.mean() - exact).norm().item<double>();
  std::vector<double> gaps;
  for (int r : {1, 3, 6}) {
    RestoreOptions o;
    o.set("travel-length", 2); o.set("travel-repeat", r);
    Solved s = solve("repaint", d, op, y, 0, 4000, 20, 10, o);
    const double gap = (s.x.reshape({4000, -1}).mean(0) - exact).norm().item<double>() / base;
    std::printf("[ repaint r = %d: mean off by %.4f of the prior-to-posterior distance, %d NFE ]\n", r, gap, s.nfe);
    EXPECT_EQ(s.nfe, restore_nfe(find_restore_solver("repaint"), 20, o));
    gaps.push_back(gap);
  }
  EXPECT_GT(gaps[0], 0.15);  // blending alone is measurably biased (Monte-Carlo error ~ 0.02)
  EXPECT_LT(gaps[1], 0.5 * gaps[0]);
  EXPECT_LT(gaps[2], 0.6 * gaps[1]);
  EXPECT_LT(gaps[2], 0.06);
}

TEST(Restore, RepaintWithoutResamplingIsBlendedDdimWithEtaOne) {
  // Two code paths: RePaint's own DDPM step (ddim_step + renoise) and Blended Diffusion running
  // the registered DDIM sampler one interval at a time; the same draws in the same order.
  const std::vector<int64_t> shape{1, 6, 6};
  GMMDenoiser d(gaussian_prior(shape, 2), make_process("vp:cosine"));
  auto op = make_random_mask(shape, 0.5, seeded(1));
  auto y = op->measure(randn({1}, shape, 3), 0.1, seeded(4));
  RestoreOptions rp, bl;
  rp.set("travel-repeat", 1);
  bl.set("sampler", "ddim"); bl.set("eta", 1);
  auto a = solve("repaint", d, op, y, 0.1, 8, 12, 5, rp), b = solve("blended", d, op, y, 0.1, 8, 12, 5, bl);
  EXPECT_TRUE(torch::equal(a.x, b.x));
  EXPECT_EQ(a.nfe, 12);
  EXPECT_EQ(b.nfe, 12);
  // Blended's default sampler is DDPM: the same update by another route (1e-12).
  auto c = solve("blended", d, op, y, 0.1, 8, 12, 5);
  EXPECT_LT((c.x - a.x).abs().max().item<double>(), 1e-10);
  // Resampling changes it, and the known region is pasted from y at the end.
  auto t = solve("repaint", d, op, y, 0.1, 8, 12, 5);
  EXPECT_GT((t.x - a.x).abs().max().item<double>(), 1e-3);
  EXPECT_LT((op->A(t.x) - y).abs().max().item<double>(), 1e-12);
}

TEST(Restore, BlendedComposesWithEverySingleStepSampler) {
  const std::vector<int64_t> shape{1, 6, 6};
  GMMDenoiser d(gaussian_prior(shape, 2), make_process("vp:cosine"));
  auto op = make_box_mask(shape);
  auto y = op->A(randn({1}, shape, 3));
  for (std::string sampler : {"ddim", "euler", "heun", "euler-a", "dpmpp-2m"}) {
    RestoreOptions o;
    o.set("sampler", sampler);
    Solved s = solve("blended", d, op, y, 0, 4, 6, 5, o);
    EXPECT_EQ(s.nfe, restore_nfe(find_restore_solver("blended"), 6, o)) << sampler;
    EXPECT_LT((op->A(s.x) - y).abs().max().item<double>(), 1e-12) << sampler;
  }
  RestoreOptions heun;
  heun.set("sampler", "heun");
  EXPECT_EQ(restore_nfe(find_restore_solver("blended"), 6, heun), 5 * 2 + 1);  // Euler on the last step
}

TEST(Restore, BaselinesAreClosedForms) {
  const std::vector<int64_t> shape{1, 8, 8};
  GMMDenoiser d(gaussian_prior(shape, 1), make_process("vp"));
  auto x = randn({3}, shape, 1);
  for (auto& op : all_operators(shape)) {
    auto y = op->measure(x, 0.1, seeded(2));
    // pinv is A^+ y, with no denoiser call.
    Solved p = solve("pinv", d, op, y[0].unsqueeze(0), 0.1, 1, 4, 3);
    EXPECT_LT(rel(p.x, op->pinv(y[0].unsqueeze(0))), 1e-14) << op->name();
    EXPECT_EQ(p.nfe, 0);
    // Tikhonov against the dense normal equations (A^T A + lambda I) x = A^T y.
    auto lam = tikhonov_lambda(*op, y, 0.1);
    auto xt = tikhonov(*op, y, lam);
    auto Am = dense(*op);
    for (int i = 0; i < 3; ++i) {
      auto lhs = Am.t().mm(Am) + torch::eye(op->in_dim(), torch::kFloat64) * lam[i].item<double>();
      auto want = torch::linalg::solve(lhs, Am.t().mv(y[i].reshape({-1})), true);
      EXPECT_LT(rel(xt[i].reshape({-1}), want), 1e-6) << op->name();
      // The discrepancy principle: |A x - y|^2 = sigma_y^2 (number of measured coordinates).
      const double n_meas = double((op->singulars() > 0).sum().item<int64_t>());
      const double r2 = (op->A(xt[i].unsqueeze(0)) - y[i]).pow(2).sum().item<double>();
      if (lam[i].item<double>() > 0) EXPECT_NEAR(r2 / (0.01 * n_meas), 1, 1e-6) << op->name();
    }
    EXPECT_GT(lam.min().item<double>(), 0) << op->name();
    // lambda = 0 is the pseudo-inverse, and so is sigma_y = 0.
    EXPECT_LT(rel(tikhonov(*op, y, torch::zeros({3})), op->pinv(y)), 1e-10) << op->name();
    EXPECT_EQ(tikhonov_lambda(*op, y, 0).abs().max().item<double>(), 0);
  }
  // Bicubic upsampling keeps constants and rejects operators without a low-resolution grid.
  auto sr = make_bicubic_downsample(shape, 2);
  Solved b = solve("bicubic", d, sr, torch::full({1, 1, 4, 4}, 0.25, torch::kFloat64), 0, 1, 4, 3);
  EXPECT_LT((b.x - 0.25).abs().max().item<double>(), 1e-12);
  EXPECT_EQ(b.x.sizes(), torch::IntArrayRef({1, 1, 8, 8}));
  EXPECT_NE(error_of([&] { solve("bicubic", d, make_box_mask(shape), torch::zeros({1, 1, 8, 8}), 0, 1, 4, 3); })
                .find("bicubic works on super-resolution operators only, not on 'inpaint-box'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { solve("tikhonov", d, std::make_shared<RowSum>(shape), torch::zeros({1, 1, 8, 1}), 0.1, 1,
                                 4, 3); })
                .find("tikhonov needs an operator with a known SVD; 'rowsum' has none"),
            std::string::npos);
  EXPECT_EQ(restore_nfe(find_restore_solver("tikhonov"), 50, {}), 0);
}

TEST(Restore, InpaintingSolversRejectOtherOperatorsAndBadOptions) {
  const std::vector<int64_t> shape{1, 8, 8};
  GMMDenoiser d(gaussian_prior(shape, 1), make_process("vp"));
  auto blur = make_gaussian_blur(shape, 1.0);
  auto y = blur->A(randn({1}, shape, 1));
  for (std::string solver : {"repaint", "blended"})
    EXPECT_NE(error_of([&] { solve(solver, d, blur, y, 0, 1, 4, 3); })
                  .find(solver + " works on inpainting masks only, not on 'blur'"),
              std::string::npos)
        << solver;
  auto box = make_box_mask(shape);
  auto yb = box->A(randn({1}, shape, 1));
  RestoreOptions bad;
  bad.set("travel-length", 0);
  EXPECT_NE(error_of([&] { solve("repaint", d, box, yb, 0, 1, 4, 3, bad); }).find("repaint: --travel-length must be an integer >= 1"),
            std::string::npos);
  bad = RestoreOptions{};
  bad.set("travel-repeat", 0);
  EXPECT_NE(error_of([&] { solve("repaint", d, box, yb, 0, 1, 4, 3, bad); }).find("repaint: --travel-repeat must be an integer >= 1"),
            std::string::npos);
  bad = RestoreOptions{};
  bad.set("sampler", "ddim9");
  EXPECT_NE(error_of([&] { solve("blended", d, box, yb, 0, 1, 4, 3, bad); }).find("unknown sampler 'ddim9'"),
            std::string::npos);
  // A mask of the wrong size, and a measurement of another image size.
  EXPECT_NE(error_of([] { make_mask({1, 8, 8}, torch::ones({7, 8}), "m"); }).find("mask 'm' has shape [7, 8], expected [8, 8]"),
            std::string::npos);
  EXPECT_NE(error_of([&] { solve("repaint", d, box, torch::zeros({1, 1, 6, 6}, torch::kFloat64), 0, 1, 4, 3); })
                .find("operator inpaint-box expects y [N, 1, 8, 8]"),
            std::string::npos);
}

// ---- tweedie restore ---------------------------------------------------------

// Fashion-MNIST test image i as a PNG, and as [1, 1, 28, 28] in [-1, 1].
torch::Tensor test_image(int64_t i, const std::string& path) {
  static Dataset d = load_dataset("fashion-mnist:test");
  auto x = d.batch_images(torch::tensor({i}, torch::kInt64));
  write_png(path, tensor_to_image(x[0]));
  return image_to_tensor(read_png(path)).unsqueeze(0);
}

double number_after(const std::string& out, const std::string& key) {
  auto at = out.find(key);
  EXPECT_NE(at, std::string::npos) << "no '" << key << "' in: " << out;
  return at == std::string::npos ? NAN : std::stod(out.substr(at + key.size()));
}

double psnr(const torch::Tensor& a, const torch::Tensor& b) {
  return 10 * std::log10(4.0 / (a - b).pow(2).mean().item<double>());
}

TEST(RestoreCLI, InpaintsAFashionMnistImage) {
  const std::string in = tmp("restore_in.png"), out = tmp("restore_box.png"), out_y = tmp("restore_box_y.png");
  std::remove(out.c_str()), std::remove(out_y.c_str());
  auto x = test_image(0, in);  // an ankle boot
  Result r = cli("restore --task inpaint-box --solver ddnm --class ankle-boot --steps 12 --eta 0.5 --seed 1 "
                 "-m models/fashion_mnist.safetensors -q " + in + " -o " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  auto y = image_to_tensor(read_png(out_y)).unsqueeze(0), xr = image_to_tensor(read_png(out)).unsqueeze(0);
  ASSERT_EQ(xr.sizes(), torch::IntArrayRef({1, 1, 28, 28}));
  // y is the input with the centred 14x14 box zeroed (mid-grey), and the
  // restoration keeps every observed pixel (DDNM is exact on the range of A).
  auto op = make_box_mask({1, 28, 28});
  EXPECT_LT((y - op->A(x)).abs().max().item<double>(), 1.5 / 127.5);
  EXPECT_LT((op->A(xr) - op->A(x)).abs().max().item<double>(), 1.5 / 127.5);
  // The printed PSNRs match the files, and the restoration beats A^+ y (the grey box).
  const double p_pinv = number_after(r.out, "PSNR A^+y "), p_out = number_after(r.out, "restored ");
  EXPECT_NEAR(p_pinv, psnr(op->pinv(y), x), 0.2);
  EXPECT_NEAR(p_out, psnr(xr, x), 0.2);
  EXPECT_GT(p_out, p_pinv + 2) << r.out;
  EXPECT_NE(r.out.find("inpaint-box, ddnm, sigma_y 0, 12 steps (12 NFE)"), std::string::npos) << r.out;
  EXPECT_NE(read_png(out).text["parameters"].find("--task inpaint-box --solver ddnm"), std::string::npos);
}

TEST(RestoreCLI, SuperResolutionDeblurAndSeeds) {
  const std::string in = tmp("restore_in2.png");
  test_image(1, in);
  // DDRM on 4x super-resolution with noise: y is the 7x7 image.
  const std::string sr = tmp("restore_sr.png");
  Result r = cli("restore --task sr4 --solver ddrm --eta-b 0.8 --sigma-y 0.05 --steps 4 -q " + in + " -o " + sr);
  ASSERT_EQ(r.code, 0) << r.out;
  Image y = read_png(tmp("restore_sr_y.png"));
  EXPECT_EQ(y.width, 7);
  EXPECT_EQ(y.height, 7);
  EXPECT_EQ(read_png(sr).width, 28);
  // DDNM+ with time travel: the NFE follows the travel path; the same seed gives the same image.
  RestoreOptions o;
  o.set("travel-length", 2); o.set("travel-repeat", 3);
  const int nfe = restore_nfe(find_restore_solver("ddnm+"), 5, o);
  const std::string a = tmp("restore_a.png"), b = tmp("restore_b.png"), c = tmp("restore_c.png");
  const std::string cmd = "restore --task blur --solver ddnm+ --sigma-y 0.02 --steps 5 --schedule trailing "
                          "--travel-length 2 --travel-repeat 3 -q " + in;
  r = cli(cmd + " --seed 3 -o " + a);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("blur, ddnm+, sigma_y 0.02, 5 steps (" + std::to_string(nfe) + " NFE)"), std::string::npos)
      << r.out;
  ASSERT_EQ(cli(cmd + " --seed 3 -o " + b).code, 0);
  ASSERT_EQ(cli(cmd + " --seed 4 -o " + c).code, 0);
  EXPECT_EQ(read_png(a).pixels, read_png(b).pixels);
  EXPECT_NE(read_png(a).pixels, read_png(c).pixels);
  // inpaint-random and denoise run too, and the gradient solvers through the network.
  for (std::string t : {"inpaint-random", "denoise"}) {
    Result q = cli("restore --task " + t + " --sigma-y 0.1 --solver ddnm+ --steps 3 -q " + in + " -o " + tmp("r.png"));
    EXPECT_EQ(q.code, 0) << q.out;
  }
  for (std::string solver : {"pigdm", "dps --zeta 0.5"}) {
    Result q = cli("restore --task sr2 --sigma-y 0.05 --solver " + solver + " --steps 3 -q " + in + " -o " + tmp("g.png"));
    EXPECT_EQ(q.code, 0) << q.out;
    EXPECT_NE(q.out.find("sr2, " + solver.substr(0, solver.find(' ')) + ", sigma_y 0.05, 3 steps (3 NFE)"),
              std::string::npos)
        << q.out;
  }
  Result h = cli("restore --help");
  for (auto f : {"--task", "--solver", "--sigma-y", "--model", "--class", "--output", "--steps", "--schedule", "--eta",
                 "--eta-b", "--travel-length", "--travel-repeat", "--zeta", "--sampler", "--seed", "--quiet",
                 "--measured", "--mask", "--prompt", "--gamma", "--resample-gamma", "--every", "--opt-steps",
                 "bicubic|blended|ddnm|ddnm+|ddrm|dps|mcg|pigdm|pinv|psld|repaint|resample|tikhonov",
                 "inpaint-box|inpaint-random|sr2|sr4|sr4-bicubic|blur|motion-blur|cs|denoise"})
    EXPECT_NE(h.out.find(f), std::string::npos) << f;
}

TEST(RestoreCLI, BadInputGetsOneClearError) {
  const std::string in = tmp("restore_in3.png"), out = tmp("never_restored.png"), out_y = tmp("never_restored_y.png");
  std::remove(out.c_str()), std::remove(out_y.c_str());
  test_image(2, in);
  const std::string big = tmp("restore_big.png"), rgb = tmp("restore_rgb.png");
  write_png(big, Image(32, 32, 1, 7));
  write_png(rgb, Image(28, 28, 3, 7));
  const std::string o = " -o " + out;
  expect_error("restore --task sr2 " + big + o, "restore_big.png: 32x32 pixels, the model takes 28x28", out);
  expect_error("restore --task sr2 " + rgb + o, "restore_rgb.png: 3 channel(s), the model takes 1", out);
  expect_error("restore --task sr3 " + in + o, "unknown task 'sr3' (known: inpaint-box, inpaint-random, sr2", out);
  expect_error("restore --task sr2 --solver dps9 " + in + o, "unknown solver 'dps9' (known: bicubic, blended, ddnm, ddnm+, ddrm, dps, mcg", out);
  expect_error("restore --task sr2 --sampler euler " + in + o, "tweedie restore: --sampler applies to blended only, not ddnm", out);
  expect_error("restore --task inpaint-box --solver blended --sampler eulerx " + in + o, "unknown sampler 'eulerx'", out);
  expect_error("restore --task blur --solver repaint " + in + o, "repaint works on inpainting masks only, not on 'blur'",
               out);
  expect_error("restore --task blur --solver bicubic " + in + o, "bicubic works on super-resolution operators only",
               out);
  expect_error("restore --task sr2 --sigma-y -0.1 " + in + o, "--sigma-y must be >= 0 (got -0.1)", out);
  expect_error("restore --task sr2 --eta-b 0.5 " + in + o, "tweedie restore: --eta-b applies to ddrm only, not ddnm", out);
  expect_error("restore --task sr2 --solver ddrm --travel-length 3 " + in + o, "--travel-length applies to ddnm+, repaint only, not ddrm", out);
  expect_error("restore --task sr2 --eta 1.5 " + in + o, "--eta must be in [0, 1]", out);
  expect_error("restore --task sr2 --solver ddrm --eta-b 2 " + in + o, "--eta-b must be in [0, 1]", out);
  expect_error("restore --task sr2 --solver ddnm+ --travel-repeat 0 " + in + o, "--travel-repeat must be an integer >= 1", out);
  expect_error("restore --task sr2 --solver ddnm+ --travel-length 0 " + in + o, "--travel-length must be an integer >= 1", out);
  expect_error("restore --task sr2 --steps 0 " + in + o, "--steps must be >= 1", out);
  expect_error("restore --task sr2 --zeta 0.5 " + in + o, "tweedie restore: --zeta applies to dps, mcg, psld, resample only, not ddnm", out);
  expect_error("restore --task sr2 --solver dps --zeta -1 " + in + o, "--zeta must be >= 0", out);
  expect_error("restore --task sr2 --class hat " + in + o, "unknown class 'hat'", out);
  expect_error("restore --task sr2 -m gmm:models/gmm/ring2d.json " + in + o, "is not an image model", out);
  expect_error("restore " + in + o, "--task is required", out);
  expect_error("restore --task sr2 " + in, "--output is required", out);
  expect_error("restore --task sr2 " + in + " -o " + tmp("x.jpg"), "--output must end in .png");
  expect_error("restore --task sr2 -o " + out, "expected one input image", out);
  expect_error("restore --task sr2 " + tmp("missing.png") + o, "missing.png", out);
  EXPECT_FALSE(exists(out_y));
}

TEST(RestoreCLI, NewTasksSolversAndBaselines) {
  const std::string in = tmp("restore_in4.png");
  auto x = test_image(3, in);
  // Compressed sensing with the Tikhonov baseline: y is a vector, so OUT_y.png shows A^+ y.
  const std::string cs = tmp("restore_cs.png");
  Result r = cli("restore --task cs --solver tikhonov --sigma-y 0.05 -q " + in + " -o " + cs);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("cs, tikhonov, sigma_y 0.05, 50 steps (0 NFE)"), std::string::npos) << r.out;
  EXPECT_EQ(read_png(tmp("restore_cs_y.png")).width, 28);
  const double ssim_printed = number_after(r.out, "SSIM ");
  auto xr = image_to_tensor(read_png(cs)).unsqueeze(0);
  EXPECT_NEAR(ssim_printed, ssim((xr + 1) / 2, (x + 1) / 2).item<double>(), 0.01);
  // Bicubic upsampling runs without a model call; RePaint's NFE follows its jump path; Blended
  // takes a sampler (Heun: 2 NFE a step, 1 on the last).
  r = cli("restore --task sr4-bicubic --solver bicubic -q " + in + " -o " + tmp("restore_bic.png"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_GT(number_after(r.out, "restored "), 12) << r.out;
  RestoreOptions o;
  o.set("travel-length", 2); o.set("travel-repeat", 2);
  const int nfe = restore_nfe(find_restore_solver("repaint"), 4, o);
  r = cli("restore --task inpaint-random --solver repaint --steps 4 --travel-length 2 --travel-repeat 2 -q " + in +
          " -o " + tmp("restore_rp.png"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("inpaint-random, repaint, sigma_y 0, 4 steps (" + std::to_string(nfe) + " NFE)"),
            std::string::npos)
      << r.out;
  r = cli("restore --task inpaint-box --solver blended --sampler heun --steps 3 -q " + in + " -o " + tmp("restore_bl.png"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("inpaint-box, blended, sigma_y 0, 3 steps (5 NFE)"), std::string::npos) << r.out;
  auto box = make_box_mask({1, 28, 28});
  auto xb = image_to_tensor(read_png(tmp("restore_bl.png"))).unsqueeze(0);
  EXPECT_LT((box->A(xb) - box->A(x)).abs().max().item<double>(), 1.5 / 127.5);  // the known region is kept
  r = cli("restore --task motion-blur --solver mcg --zeta 0.5 --steps 2 -q " + in + " -o " + tmp("restore_mcg.png"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("motion-blur, mcg, sigma_y 0, 2 steps (2 NFE)"), std::string::npos) << r.out;
}

TEST(RestoreCLI, BenchRestoreWritesTablesAndExamples) {
  const std::string dir = ::testing::TempDir() + "/bench_restore";
  std::system(("mkdir -p " + dir + " && rm -f " + dir + "/restore.md " + dir + "/restore.png").c_str());
  Result r = cli("bench restore -n 3 --batch 2 --steps 2 --tasks inpaint-box,sr4,denoise --solvers pinv,bicubic,repaint,ddnm "
                 "--sigma-y 0,0.05 --examples 2 -q -o " + dir);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string md = read_file(dir + "/restore.md");
  EXPECT_NE(md.find("the first 3 images of fashion-mnist:test, 2 steps"), std::string::npos) << md;
  EXPECT_NE(md.find("**sigma_y = 0** (denoise left out: y = x)"), std::string::npos) << md;
  EXPECT_NE(md.find("**sigma_y = 0.05**"), std::string::npos) << md;
  EXPECT_NE(md.find("| task | pinv | bicubic | repaint (2) | ddnm (2) |"), std::string::npos) << md;
  // bicubic does not apply to the mask, repaint not to super-resolution.
  EXPECT_NE(md.find("| inpaint-box | "), std::string::npos);
  auto row = [&](const std::string& task, size_t from) {
    auto at = md.find("| " + task + " | ", from);
    return at == std::string::npos ? std::string() : md.substr(at, md.find('\n', at) - at);
  };
  const size_t noisy = md.find("**sigma_y = 0.05**");
  std::string box0 = row("inpaint-box", 0), sr4 = row("sr4", 0), den = row("denoise", noisy);
  EXPECT_NE(box0.find("| — |"), std::string::npos) << box0;  // bicubic
  EXPECT_NE(sr4.find("| — |"), std::string::npos) << sr4;    // repaint
  EXPECT_GT(md.find("| denoise |"), noisy) << "denoise at sigma_y = 0 is left out";
  EXPECT_FALSE(den.empty());
  EXPECT_NE(box0.find("**"), std::string::npos) << box0;  // the best PSNR in bold
  // The table's numbers: the pinv PSNR of the box task is the mean over the 3 images of A^+ y.
  auto op = make_box_mask({1, 28, 28});
  Dataset d = load_dataset("fashion-mnist:test");
  auto t = (d.batch_images(torch::arange(3)) + 1) / 2;
  const double want = tweedie::psnr((op->A(t * 2 - 1) + 1) / 2, t).mean().item<double>();
  std::string cell = box0.substr(box0.find("| ", 2) + 2);
  cell.erase(std::remove(cell.begin(), cell.end(), '*'), cell.end());
  EXPECT_NEAR(std::stod(cell), want, 0.01) << box0;
  // Examples: (2 noise levels x 3 tasks - denoise at 0) x 2 images = 10 rows, each of
  // 2 + 4 tiles of 28 px with 2-px gaps, enlarged twice, below a header line of the
  // 7x13 font and right of row labels such as "inpaint-box 0.05" (16 characters).
  Image img = read_png(dir + "/restore.png");
  EXPECT_EQ(img.width, 16 * 7 + 8 + 2 * (6 * 28 + 7 * 2));
  EXPECT_EQ(img.height, 13 + 6 + 2 * (10 * 28 + 11 * 2));
  // --resume: the cells land in restore.cells.json; a second run takes them from there and
  // writes the same report; a damaged cache is one clear error.
  const std::string rdir = ::testing::TempDir() + "/bench_restore_resume";
  std::system(("rm -rf " + rdir + " && mkdir -p " + rdir).c_str());
  const std::string args = "bench restore -n 3 --batch 2 --steps 2 --tasks inpaint-box,sr4 --solvers pinv,ddnm "
                           "--sigma-y 0 --examples 1 --resume -q -o " + rdir;
  ASSERT_EQ(cli(args).code, 0);
  const std::string first = read_file(rdir + "/restore.md"), cells = read_file(rdir + "/restore.cells.json");
  size_t count = 0;
  for (size_t at = cells.find("\"psnr\""); at != std::string::npos; at = cells.find("\"psnr\"", at + 1)) ++count;
  EXPECT_EQ(count, 4u) << cells;  // 2 tasks x 2 solvers
  std::system(("rm -f " + rdir + "/restore.md").c_str());
  ASSERT_EQ(cli(args).code, 0);
  EXPECT_EQ(read_file(rdir + "/restore.md"), first);
  // The cells are keyed by the model's content, not its place: a copy of the model in another
  // directory finds them (a cell changed in the file shows up in the report), and the report
  // names the model by file name and hash, not by path.
  EXPECT_EQ(cells.find(source_path("models")), std::string::npos) << cells;
  EXPECT_NE(first.find("fashion_mnist.safetensors (fnv1a64 "), std::string::npos) << first;
  auto j = nlohmann::json::parse(cells);
  int changed = 0;
  for (auto& [k, c] : j["cells"].items())
    if (k.find("|inpaint-box|") != std::string::npos && k.substr(k.size() - 5) == "|pinv") c["psnr"] = 77.25, ++changed;
  EXPECT_EQ(changed, 1);
  write_file_atomic(rdir + "/restore.cells.json", j.dump());
  std::system(("mkdir -p " + rdir + "/elsewhere && cp " + source_path("models/fashion_mnist.safetensors") + " " + rdir +
               "/elsewhere/").c_str());
  ASSERT_EQ(cli(args + " --model " + rdir + "/elsewhere/fashion_mnist.safetensors").code, 0);
  EXPECT_NE(read_file(rdir + "/restore.md").find("77.25"), std::string::npos) << read_file(rdir + "/restore.md");
  write_file_atomic(rdir + "/restore.cells.json", "{\"version\": 1, \"cells\": [}");
  expect_error(args, "restore.cells.json: cannot resume from it");
  expect_error("bench restore --tasks sr3 -o " + dir, "unknown task 'sr3'");
  expect_error("bench restore --solvers ddnm,dps9 -o " + dir, "unknown solver 'dps9'");
  expect_error("bench restore -n 0 -o " + dir, "-n must be >= 1");
  expect_error("bench restore --sigma-y 0,-1 -o " + dir, "--sigma-y entry '-1' is not a number >= 0");
  expect_error("bench restore --steps 0 -o " + dir, "--steps must be >= 1");
  expect_error("bench restore -o " + dir + "/missing", "output directory");
  Result h = cli("bench restore --help");
  for (auto f : {"--model", "--num", "--steps", "--schedule", "--tasks", "--solvers", "--sigma-y", "--batch",
                 "--examples", "--seed", "--resume", "--out", "--quiet"})
    EXPECT_NE(h.out.find(f), std::string::npos) << f;
}


// ---- latent models: the operator acts on decoded pixels ---------------------

// A toy latent model: a Gaussian prior on latents [2, 4, 4] and a fixed
// linear decoder to pixels [1, 8, 8] (full column rank), its least-squares
// inverse as the encoder.
struct LatentToy {
  std::vector<int64_t> latent{2, 4, 4}, pixels{1, 8, 8};
  GaussianMixture prior = gaussian_prior({2, 4, 4}, 21);
  torch::Tensor W = at::randn({64, 32}, seeded(22), torch::kFloat64) / std::sqrt(32.0);
  torch::Tensor Wp = torch::linalg::pinv(W);
  torch::Tensor decode(const torch::Tensor& z) const {
    return torch::matmul(z.flatten(1).to(torch::kFloat64), W.t()).reshape({z.size(0), 1, 8, 8});
  }
  torch::Tensor encode(const torch::Tensor& x) const {
    return torch::matmul(x.flatten(1).to(torch::kFloat64), Wp.t()).reshape({x.size(0), 2, 4, 4});
  }
  Measurement measurement(const OperatorPtr& op, const torch::Tensor& y, double sigma_y) const {
    Measurement m{op, y, sigma_y};
    m.decode = [this](const torch::Tensor& z) { return decode(z); };
    m.encode = [this](const torch::Tensor& x) { return encode(x); };
    return m;
  }
};

torch::Tensor latent_solve(const LatentToy& t, Denoiser& d, const std::string& solver, const OperatorPtr& op,
                           const torch::Tensor& y, int64_t n, int steps, uint64_t seed, RestoreOptions o = {}) {
  auto sig = make_schedule("karras", d.process(), steps);
  auto gen = seeded(seed);
  auto x = at::randn({n, 2, 4, 4}, gen, torch::kFloat64) * sig[0];
  SamplerRun run(d, sig, {}, {}, gen);
  return run_restore(find_restore_solver(solver), run, t.measurement(op, y.expand({n, -1, -1, -1}).contiguous(), 0), x, o);
}

TEST(RestoreLatent, DpsThroughTheDecoderIsTheGradientAndPsldWithoutGluingIsIt) {
  // One step to 0: x' = x0 - zeta k W^T A^T r / |r| / model_scale(s0), r = A W x0 - y.
  LatentToy t;
  auto proc = make_process("vp");
  GMMDenoiser d(t.prior, proc);
  const double s0 = 0.8, zeta = 0.5;
  auto op = make_box_mask(t.pixels);
  auto z = randn({2}, t.latent, 14) * s0;
  auto y = op->A(randn({2}, t.pixels, 15));
  RestoreOptions o;
  o.set("zeta", zeta);
  SamplerRun run(d, {s0, 0}, {}, {}, seeded(1));
  auto out = run_restore(find_restore_solver("dps"), run, t.measurement(op, y, 0), z, o);
  auto k = (t.prior.variances[0] / (t.prior.variances[0] + s0 * s0)).reshape(t.latent);
  auto z0 = t.prior.means[0].reshape(t.latent) + k * (z - t.prior.means[0].reshape(t.latent));
  auto r = op->A(t.decode(z0)) - y;
  auto norm = r.flatten(1).norm(2, 1).reshape({2, 1, 1, 1});
  auto back = torch::matmul(op->At(r).flatten(1), t.W).reshape({2, 2, 4, 4});  // W^T A^T r
  auto want = z0 - k * back / norm * (zeta / proc->model_scale(s0));
  EXPECT_LT(rel(out, want), 1e-10);
  // PSLD with gamma = 0 is latent DPS, bit for bit, over a whole run.
  RestoreOptions p;
  p.set("gamma", 0);
  EXPECT_TRUE(torch::equal(latent_solve(t, d, "psld", op, y.narrow(0, 0, 1), 3, 6, 7, p),
                           latent_solve(t, d, "dps", op, y.narrow(0, 0, 1), 3, 6, 7)));
}

TEST(RestoreLatent, StochasticResamplingIsTheGaussianProduct) {
  LatentToy t;
  auto proc = make_process("vp");
  GMMDenoiser d(t.prior, proc);
  SamplerRun run(d, {2.0, 0.5, 0}, {}, {}, seeded(3));
  auto z0 = randn({1}, t.latent, 4), zn = randn({1}, t.latent, 5);
  auto out = stochastic_resample(run, z0, zn, 2.0, 0.5, 40);
  const double post = proc->ancestral_step(2.0, 0.5, 1.0).noise, v = 40 * post * post, n2 = 0.25;
  auto noise = at::randn(z0.sizes(), seeded(3), z0.options());
  auto want = (z0 * (v * proc->a(0.5)) + zn * n2) / (v + n2) + noise * std::sqrt(1 / (1 / v + 1 / n2));
  EXPECT_LT(rel(out, want), 1e-12);
  // Hard data consistency meets a noiseless measurement through the decoder.
  auto op = make_box_mask(t.pixels);
  auto y = op->A(t.decode(randn({1}, t.latent, 6)));
  auto m = t.measurement(op, y, 0);
  auto before = (op->A(t.decode(z0)) - y).pow(2).mean().item<double>();
  auto after = (op->A(t.decode(hard_data_consistency(m, z0, 500, 0.05))) - y).pow(2).mean().item<double>();
  EXPECT_LT(after, 1e-3 * before);
}

TEST(RestoreLatent, LatentSolversMeetTheMeasurementAndPixelSolversAreRefused) {
  LatentToy t;
  GMMDenoiser d(t.prior, make_process("vp:cosine"));
  auto op = make_box_mask(t.pixels);
  auto y = op->A(t.decode(t.prior.sample(1, seeded(2)).to(torch::kFloat64)));
  auto fit = [&](const torch::Tensor& z) {
    return (op->A(t.decode(z)) - y.expand({z.size(0), -1, -1, -1})).pow(2).mean().sqrt().item<double>();
  };
  RestoreOptions off;
  off.set("zeta", 0);
  const double free = fit(latent_solve(t, d, "dps", op, y, 16, 20, 3, off));
  RestoreOptions rs;
  rs.set("every", 2); rs.set("opt-steps", 300); rs.set("opt-lr", 0.05);
  const double dps = fit(latent_solve(t, d, "dps", op, y, 16, 20, 3)), psld = fit(latent_solve(t, d, "psld", op, y, 16, 20, 3)),
               resample = fit(latent_solve(t, d, "resample", op, y, 16, 20, 3, rs));
  std::printf("[ latent box inpainting, residual RMS: unguided %.4f, dps %.4f, psld %.4f, resample %.4f ]\n", free, dps,
              psld, resample);
  EXPECT_LT(dps, 0.7 * free);
  EXPECT_LT(psld, 0.7 * free);
  EXPECT_LT(resample, 0.05 * free);
  // Solvers of the sampling space refuse a latent measurement, latent-only ones a pixel model.
  auto sig = make_schedule("karras", d.process(), 4);
  SamplerRun run(d, sig, {}, {}, seeded(1));
  auto z = at::randn({1, 2, 4, 4}, seeded(1), torch::kFloat64);
  EXPECT_NE(error_of([&] { run_restore(find_restore_solver("ddnm"), run, t.measurement(op, y, 0), z); })
                .find("works in the sampling space of a pixel model"),
            std::string::npos);
  GMMDenoiser pix(gaussian_prior(t.pixels, 3), make_process("vp"));
  SamplerRun run2(pix, sig, {}, {}, seeded(1));
  EXPECT_NE(error_of([&] { run_restore(find_restore_solver("psld"), run2, {op, y, 0}, at::randn({1, 1, 8, 8}, seeded(1), torch::kFloat64)); })
                .find("works on latent models"),
            std::string::npos);
}

}  // namespace
