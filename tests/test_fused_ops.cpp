// The fused bf16 inference kernels of src/nn/fused_ops.cpp: GroupNorm(+SiLU)
// on channels_last, LayerNorm over the last dim, GEGLU. Each against a float64
// reference computed from the same (bf16) input, and against the torch path
// the modules take under autograd; plus the scalar pieces (bf16 rounding bit
// for bit against c10::BFloat16, erf against std::erf, exp against std::exp).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include <torch/torch.h>

#include "../src/nn/fused_ops.h"
#include "tweedie/nn/norm.h"
#include "tweedie/nn/spatial_transformer.h"

using namespace tweedie;

namespace {

// Max over elements of |y - ref| / (2^-8 |ref| + atol): <= 1 means every
// element is within about one bf16 rounding (half an ulp is <= 2^-8 relative)
// of the float64 reference, plus atol for values near zero.
double bf16_excess(const torch::Tensor& y, const torch::Tensor& ref, double atol) {
  auto r = ref.to(torch::kFloat64);
  auto e = (y.to(torch::kFloat64) - r).abs() / (r.abs() * std::ldexp(1.0, -8) + atol);
  return e.max().item<double>();
}
// Mean |y - ref| relative to mean |ref|. One bf16 rounding gives ~1.4e-3
// (a quarter ulp on average); an extra systematic error would show here.
double mean_rel_err(const torch::Tensor& y, const torch::Tensor& ref) {
  auto r = ref.to(torch::kFloat64);
  return ((y.to(torch::kFloat64) - r).abs().mean() / r.abs().mean()).item<double>();
}

// GroupNorm (+ SiLU) in float64 of x (any dtype/layout), per-channel affine w, b.
torch::Tensor group_norm_ref(const torch::Tensor& x, int64_t G, const torch::Tensor& w, const torch::Tensor& b,
                             double eps, bool silu) {
  auto xd = x.to(torch::kFloat64).contiguous();
  const int64_t N = xd.size(0), C = xd.size(1);
  auto xg = xd.view({N, G, -1});
  auto mean = xg.mean({2}, true), var = (xg - mean).pow(2).mean({2}, true);
  auto y = ((xg - mean) / (var + eps).sqrt()).view(xd.sizes());
  y = y * w.to(torch::kFloat64).view({1, C, 1, 1}) + b.to(torch::kFloat64).view({1, C, 1, 1});
  return silu ? y * torch::sigmoid(y) : y;
}

GroupNorm32 make_group_norm(int64_t G, int64_t C, torch::ScalarType dt) {
  GroupNorm32 gn(G, C);
  torch::NoGradGuard ng;
  gn->weight.copy_(1 + 0.5 * torch::randn({C}));
  gn->bias.copy_(0.5 * torch::randn({C}));
  gn->to(dt);
  return gn;
}

struct GnCase {
  int64_t N, C, G, H, W;
  double mean, std;
};

}  // namespace

TEST(FusedOps, Bf16RoundingMatchesC10) {
  std::mt19937 rng(7);
  std::vector<uint32_t> bits = {0u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00001u, 0x7f800001u,
                                0x00000001u, 0x007fffffu, 0x7f7fffffu, 0x3f808000u, 0x3f818000u, 0x3f807fffu};
  for (int i = 0; i < 200000; ++i) bits.push_back(rng());
  for (uint32_t u : bits) {
    float f;
    std::memcpy(&f, &u, 4);
    const uint16_t mine = tweedie::detail::float_to_bf16_bits(f), ref = c10::BFloat16(f).x;
    ASSERT_EQ(mine, ref) << "float bits 0x" << std::hex << u;
    const float back = tweedie::detail::bf16_bits_to_float(uint16_t(u >> 16)), back_ref = float(c10::BFloat16(uint16_t(u >> 16), c10::BFloat16::from_bits()));
    ASSERT_TRUE(std::memcmp(&back, &back_ref, 4) == 0) << "bf16 bits 0x" << std::hex << (u >> 16);
  }
}

TEST(FusedOps, ErfAndExpApproximations) {
  double max_erf = 0, max_exp = 0;
  for (int i = -600000; i <= 600000; ++i) {  // z in [-6, 6], step 1e-5
    const float z = float(i * 1e-5);
    max_erf = std::max(max_erf, std::abs(double(tweedie::detail::erf_approx(z)) - std::erf(double(z))));
  }
  for (int i = -87000; i < 88000; ++i) {  // x in [-87, 88)
    const float x = float(i * 1e-3 + 0.000123);
    const double r = std::exp(double(x));
    max_exp = std::max(max_exp, std::abs(double(tweedie::detail::exp_approx(x)) - r) / r);
  }
  EXPECT_LE(max_erf, 2e-7);
  EXPECT_LE(max_exp, 3e-7);
  EXPECT_EQ(tweedie::detail::erf_approx(50.f), 1.0f);
  EXPECT_EQ(tweedie::detail::erf_approx(-std::numeric_limits<float>::infinity()), -1.0f);
  EXPECT_TRUE(std::isnan(tweedie::detail::erf_approx(std::nanf(""))));
}

TEST(FusedOps, GroupNormBf16ChannelsLastMatchesFloat64) {
  torch::manual_seed(0);
  torch::NoGradGuard ng;
  const std::vector<GnCase> cases = {
      {2, 64, 32, 16, 16, 0.0, 1.0},     // SD-like: 2 channels per group
      {1, 32, 8, 32, 32, 100.0, 1.0},    // large mean: breaks a float32 E[x^2] - E[x]^2
      {3, 24, 6, 5, 7, -3.0, 4.0},       // C not a multiple of 16, odd H, W, N = 3
      {3, 40, 8, 1, 1, 0.5, 2.0},        // H W = 1
      {1, 1280, 32, 8, 8, 0.0, 3.0},     // SD's deepest level
  };
  for (const auto& k : cases) {
    auto x = (k.mean + k.std * torch::randn({k.N, k.C, k.H, k.W}))
                 .to(torch::kBFloat16)
                 .contiguous(torch::MemoryFormat::ChannelsLast);
    auto gn = make_group_norm(k.G, k.C, torch::kBFloat16);
    for (bool silu : {false, true}) {
      SCOPED_TRACE("N C G H W = " + std::to_string(k.N) + " " + std::to_string(k.C) + " " + std::to_string(k.G) +
                   " " + std::to_string(k.H) + " " + std::to_string(k.W) + ", mean " + std::to_string(k.mean) +
                   (silu ? ", silu" : ""));
      ASSERT_TRUE(tweedie::detail::fused_group_norm_applies(x));
      auto y = silu ? gn->forward_silu(x) : gn->forward(x);
      ASSERT_EQ(y.scalar_type(), torch::kBFloat16);
      ASSERT_EQ(y.sizes(), x.sizes());
      EXPECT_TRUE(y.is_contiguous(torch::MemoryFormat::ChannelsLast));
      auto ref = group_norm_ref(x, k.G, gn->weight, gn->bias, 1e-5, silu);
      // One bf16 rounding of the exact value (atol: fp32 cancellation in x a + b
      // at mean 100 is ~1e-5 of the unit output scale).
      EXPECT_LE(bf16_excess(y, ref, 1e-4), 1.0);
      EXPECT_LE(mean_rel_err(y, ref), 2e-3);
    }
  }
}

TEST(FusedOps, GroupNormFloat32ChannelsLastMatchesFloat64) {
  torch::manual_seed(1);
  torch::NoGradGuard ng;
  auto x = (100 + torch::randn({2, 48, 9, 11})).contiguous(torch::MemoryFormat::ChannelsLast);
  auto gn = make_group_norm(16, 48, torch::kFloat32);
  auto y = gn->forward_silu(x);
  EXPECT_EQ(y.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(y.is_contiguous(torch::MemoryFormat::ChannelsLast));
  auto ref = group_norm_ref(x, 16, gn->weight, gn->bias, 1e-5, true);
  EXPECT_LE((y.to(torch::kFloat64) - ref).abs().max().item<double>(), 1e-4);  // fp32 x a + b at mean 100
}

TEST(FusedOps, GroupNormFusedAgreesWithAutogradPath) {
  torch::manual_seed(2);
  auto gn = make_group_norm(8, 64, torch::kBFloat16);
  auto x = torch::randn({2, 64, 12, 12}).to(torch::kBFloat16).contiguous(torch::MemoryFormat::ChannelsLast);
  for (bool silu : {false, true}) {
    torch::Tensor fused, slow;
    {
      torch::NoGradGuard ng;
      fused = silu ? gn->forward_silu(x) : gn->forward(x);
    }
    slow = silu ? gn->forward_silu(x) : gn->forward(x);  // grad mode: the torch code, recorded by autograd
    EXPECT_TRUE(slow.requires_grad());
    slow = slow.detach();
    // The torch path rounds to bf16 after the norm and again after SiLU.
    EXPECT_TRUE(torch::allclose(fused.to(torch::kFloat32), slow.to(torch::kFloat32), 1.0 / 64, 1e-2));
    EXPECT_LE(mean_rel_err(fused, slow), 3e-3);
  }
  // The statistics do not depend on the thread count (fixed blocks, fixed order).
  torch::NoGradGuard ng;
  auto big = torch::randn({1, 64, 40, 40}).to(torch::kBFloat16).contiguous(torch::MemoryFormat::ChannelsLast);
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  auto y1 = gn->forward_silu(big);
  at::set_num_threads(std::max(2, threads));
  auto y2 = gn->forward_silu(big);
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(y1, y2));
}

TEST(FusedOps, LayerNormBf16MatchesFloat64) {
  torch::manual_seed(3);
  torch::NoGradGuard ng;
  for (int64_t d : {320, 37}) {
    for (double mean : {0.0, 50.0}) {
      for (bool affine : {true, false}) {
        SCOPED_TRACE("d " + std::to_string(d) + ", mean " + std::to_string(mean) + (affine ? ", affine" : ""));
        auto x = (mean + torch::randn({3, 5, d})).to(torch::kBFloat16);
        torch::Tensor w, b;
        if (affine) {
          w = (1 + 0.3 * torch::randn({d})).to(torch::kBFloat16);
          b = (0.3 * torch::randn({d})).to(torch::kBFloat16);
        }
        ASSERT_TRUE(tweedie::detail::fused_layer_norm_applies(x));
        auto y = layer_norm_f32(x, 1e-5, w, b);
        ASSERT_EQ(y.scalar_type(), torch::kBFloat16);
        ASSERT_EQ(y.sizes(), x.sizes());
        auto xd = x.to(torch::kFloat64);
        auto m = xd.mean(-1, true);
        auto ref = (xd - m) / ((xd - m).pow(2).mean(-1, true) + 1e-5).sqrt();
        if (affine) ref = ref * w.to(torch::kFloat64) + b.to(torch::kFloat64);
        EXPECT_LE(bf16_excess(y, ref, 1e-4), 1.0);
        EXPECT_LE(mean_rel_err(y, ref), 2e-3);
        // Against the torch path (grad mode on: no fused kernel).
        torch::AutoGradMode on(true);
        ASSERT_FALSE(tweedie::detail::fused_layer_norm_applies(x));
        auto slow = layer_norm_f32(x, 1e-5, w, b);
        EXPECT_TRUE(torch::allclose(y.to(torch::kFloat32), slow.to(torch::kFloat32), 1.0 / 64, 1e-2));
      }
    }
  }
}

TEST(FusedOps, GegluBf16MatchesFloat64) {
  torch::manual_seed(4);
  torch::NoGradGuard ng;
  const int64_t n = 53;  // not a multiple of 16
  auto a = torch::randn({4, 3, n});
  auto g = torch::randn({4, 3, n}) * 3;
  // Large |g| (and erf's region boundaries at |g| = sqrt 2, 4 sqrt 2) in the first row.
  const std::vector<float> big = {-1e4f, -30, -10, -7, -5.657f, -5.6f, -5, -4, -1.4143f, -1.4142f, -1e-3f, 0,
                                  1e-3f, 1.4142f, 1.4143f, 4,      5,     5.6f, 5.657f, 7, 10, 30, 1e4f};
  for (size_t i = 0; i < big.size(); ++i) g[0][0][int64_t(i)] = big[i];
  auto x = torch::cat({a, g}, -1).to(torch::kBFloat16);
  ASSERT_TRUE(tweedie::detail::fused_geglu_applies(x));
  auto y = geglu(x);
  ASSERT_EQ(y.scalar_type(), torch::kBFloat16);
  ASSERT_EQ(y.sizes(), torch::IntArrayRef({4, 3, n}));
  auto xd = x.to(torch::kFloat64).contiguous();
  auto ref = torch::empty({4, 3, n}, torch::kFloat64);
  auto xa = xd.accessor<double, 3>();
  auto ra = ref.accessor<double, 3>();
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t k = 0; k < n; ++k) {
        const double av = xa[i][j][k], gv = xa[i][j][n + k];
        ra[i][j][k] = av * 0.5 * gv * (1 + std::erf(gv / std::sqrt(2.0)));
      }
  // Relative accuracy down to tiny outputs (the erfc branch), absolute past |g| = 4 sqrt 2.
  EXPECT_LE(bf16_excess(y, ref, 3e-7), 1.0);
  EXPECT_LE(mean_rel_err(y, ref), 2e-3);
  // The torch path (grad mode on).
  torch::AutoGradMode on(true);
  ASSERT_FALSE(tweedie::detail::fused_geglu_applies(x));
  auto slow = geglu(x);
  EXPECT_TRUE(torch::allclose(y.to(torch::kFloat32), slow.to(torch::kFloat32), 1.0 / 64, 1e-2));
}

TEST(FusedOps, GegluPropagatesNaN) {
  torch::NoGradGuard ng;
  auto x = torch::randn({2, 64});
  const float nan = std::numeric_limits<float>::quiet_NaN();
  x[0][3] = nan;       // a
  x[1][32 + 7] = nan;  // g
  x[1][32 + 8] = 1e4;  // g large next to it
  auto y = geglu(x.to(torch::kBFloat16)).to(torch::kFloat32);
  auto isnan = torch::isnan(y);
  EXPECT_TRUE(isnan[0][3].item<bool>());
  EXPECT_TRUE(isnan[1][7].item<bool>());
  EXPECT_EQ(isnan.sum().item<int64_t>(), 2);
}
