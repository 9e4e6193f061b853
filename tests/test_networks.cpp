// Networks (UNet, DiT/U-ViT) and their layers: shapes, initialization
// properties (DiT is exactly zero at init), the null class, hook sites,
// efficient vs explicit attention, bf16 vs fp32, gradients, safetensors
// round trip and the errors for bad files and bad configs. Tiny configs so
// the whole file runs in a few seconds.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>

#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/io/safetensors.h"
#include "tweedie/models/dit.h"
#include "tweedie/models/network.h"
#include "tweedie/models/network_io.h"
#include "tweedie/models/unet.h"
#include "tweedie/nn/attention.h"
#include "../src/nn/flash_attention.h"
#include "tweedie/nn/embedding.h"
#include "tweedie/nn/hooks.h"
#include "tweedie/nn/modulation.h"
#include "tweedie/nn/norm.h"
#include "tweedie/nn/resample.h"

using namespace tweedie;
using tweedie::testing::error_of;

namespace {

const char* kUNet28 =
    R"({"in_channels":1,"image_size":28,"model_channels":16,"channel_mult":[1,2,2],"num_res_blocks":1,
        "attention_resolutions":[2],"num_heads":2,"norm_groups":8,"num_classes":10})";
const char* kUNet32 =
    R"({"in_channels":3,"image_size":32,"model_channels":16,"channel_mult":[1,2],"num_res_blocks":1,
        "attention_resolutions":[1,2],"head_channels":8,"norm_groups":8,"use_scale_shift_norm":false,
        "resblock_updown":true,"dropout":0.1,"time_embedding":"fourier"})";
const char* kDiT = R"({"in_channels":1,"image_size":28,"patch_size":4,"hidden_size":32,"depth":3,"num_heads":4,
        "num_classes":10})";
const char* kUViT = R"({"in_channels":2,"height":8,"width":12,"patch_size":2,"hidden_size":32,"depth":5,
        "num_heads":2,"mlp_ratio":2,"long_skips":true,"time_scale":1000})";

std::string tmp(const std::string& n) { return ::testing::TempDir() + "/net_" + n; }

int64_t param_count(Network& n) {
  int64_t c = 0;
  for (auto& p : n.parameters()) c += p.numel();
  return c;
}

// Random weights everywhere (zero-initialized layers included), so every
// path of the network carries signal.
void perturb(Network& n, double std = 0.05) {
  torch::NoGradGuard g;
  for (auto& p : n.parameters()) p.add_(torch::randn_like(p) * std);
}

NetworkPtr clone(Network& n) {
  auto c = make_network(n.arch(), n.config_json());
  torch::NoGradGuard g;
  auto src = network_tensors(n), dst = network_tensors(*c);
  for (size_t i = 0; i < src.size(); ++i) dst[i].second.copy_(src[i].second);
  return c;
}

struct Batch {
  torch::Tensor x, t;
  Cond c;
};

Batch batch(Network& n, int64_t N = 2, bool labels = true) {
  auto s = n.sample_shape();
  Batch b;
  b.x = torch::randn({N, s[0], s[1], s[2]});
  b.t = torch::linspace(10, 900, N);
  if (labels && n.num_classes() > 0) b.c.labels = torch::arange(N, torch::kInt64) % n.num_classes();
  return b;
}

torch::Tensor run(Network& n, const Batch& b) {
  torch::NoGradGuard g;
  return n.forward(b.x, b.t, b.c);
}

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kFloat64) - b.to(torch::kFloat64)).norm() / b.to(torch::kFloat64).norm()).item<double>();
}

}  // namespace

// ------------------------------------------------------------------ layers

TEST(NetworkLayers, SinusoidalEmbeddingClosedForm) {
  auto t = torch::tensor({0.0, 3.5, 999.0});
  auto e = timestep_embedding(t, 8);
  ASSERT_EQ(e.sizes(), (std::vector<int64_t>{3, 8}));
  for (int i = 0; i < 3; ++i)
    for (int k = 0; k < 4; ++k) {
      double f = std::exp(-std::log(10000.0) * k / 4), a = t[i].item<double>() * f;
      EXPECT_NEAR(e[i][k].item<double>(), std::cos(a), 1e-4);
      EXPECT_NEAR(e[i][4 + k].item<double>(), std::sin(a), 1e-4);
    }
  auto s = timestep_embedding(t, 8, 10000, /*flip_sin_to_cos=*/false);
  EXPECT_TRUE(torch::equal(s.narrow(1, 0, 4), e.narrow(1, 4, 4)));
  auto odd = timestep_embedding(t, 7);
  EXPECT_EQ(odd.size(1), 7);
  EXPECT_EQ(odd.select(1, 6).abs().max().item<float>(), 0.f);
  // downscale_freq_shift = 1 (diffusers' default): freq_k = exp(-log(P) k / (half - 1))
  auto d = timestep_embedding(t, 8, 10000, true, 1.0);
  EXPECT_NEAR(d[1][3].item<double>(), std::cos(3.5 * std::exp(-std::log(10000.0))), 1e-5);
}

TEST(NetworkLayers, FourierFeaturesAndLabelEmbedder) {
  torch::manual_seed(0);
  GaussianFourierFeatures f(6, 16.0);
  auto t = torch::tensor({0.25, -1.0});
  auto e = f->forward(t);
  ASSERT_EQ(e.sizes(), (std::vector<int64_t>{2, 6}));
  for (int k = 0; k < 3; ++k) {
    double a = -1.0 * f->W[k].item<double>() * 2 * M_PI;
    EXPECT_NEAR(e[1][k].item<double>(), std::sin(a), 1e-3);
    EXPECT_NEAR(e[1][3 + k].item<double>(), std::cos(a), 1e-3);
  }
  EXPECT_NEAR(GaussianFourierFeatures(4000, 16.0)->W.std().item<double>(), 16.0, 1.0);  // W ~ N(0, 16^2)
  EXPECT_TRUE(torch::equal(GaussianFourierFeatures(6, 16.0)->W, f->W));  // fixed seed: the same W everywhere
  LabelEmbedder le(3, 4);
  auto out = le->forward(torch::tensor({-1, 0, 2}, torch::kInt64));
  EXPECT_TRUE(torch::equal(out[0], le->embedding_table->weight[3]));  // -1 -> the null row
  EXPECT_TRUE(torch::equal(out[2], le->embedding_table->weight[2]));
  EXPECT_NE(error_of([&] { le->forward(torch::tensor({3}, torch::kInt64)); }).find("class label 3"), std::string::npos);
  EXPECT_NE(error_of([&] { le->forward(torch::tensor({-2}, torch::kInt64)); }).find("-2"), std::string::npos);
}

TEST(NetworkLayers, AdaGNAndGroupNormInFloat32) {
  torch::manual_seed(1);
  GroupNorm32 n(2, 4);
  auto h = torch::randn({2, 4, 3, 3}), sc = torch::randn({2, 4}), sh = torch::randn({2, 4});
  auto ref = torch::group_norm(h, 2, {}, {}, 1e-5) * (1 + sc.view({2, 4, 1, 1})) + sh.view({2, 4, 1, 1});
  {
    torch::NoGradGuard g;
    EXPECT_LT((ada_group_norm(n, h, sc, sh) - ref).abs().max().item<float>(), 1e-5);
  }
  EXPECT_LT((ada_group_norm(n, h, sc, sh) - ref).abs().max().item<float>(), 1e-5);
  // bf16 channels_last input: computed in float32 on a contiguous tensor.
  auto hb = h.to(torch::kBFloat16).contiguous(torch::MemoryFormat::ChannelsLast);
  auto yb = n->forward(hb);
  EXPECT_EQ(yb.scalar_type(), torch::kBFloat16);
  EXPECT_LT((yb.to(torch::kFloat32) - torch::group_norm(hb.to(torch::kFloat32), 2, {}, {}, 1e-5)).abs().max().item<float>(), 2e-2);
}

TEST(NetworkLayers, SubpixelUpsampleConvEqualsUpsampleThenConv) {
  torch::NoGradGuard ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  for (auto [ci, co, h, w] : {std::array<int64_t, 4>{3, 5, 4, 6}, {8, 8, 1, 1}, {6, 2, 7, 3}}) {
    auto x = at::randn({2, ci, h, w}, gen, torch::kFloat64);
    auto wt = at::randn({co, ci, 3, 3}, gen, torch::kFloat64), b = at::randn({co}, gen, torch::kFloat64);
    auto ref = torch::conv2d(upsample_nearest2x(x), wt, b, 1, 1);
    SubpixelKernels k;
    EXPECT_TRUE(torch::allclose(upsample_conv3x3(x, wt, b, &k), ref, 0, 1e-12)) << ci << " " << h << "x" << w;
    EXPECT_TRUE(torch::allclose(upsample_conv3x3(x, wt, {}, &k), torch::conv2d(upsample_nearest2x(x), wt, {}, 1, 1), 0,
                                1e-12));
    wt.mul_(-2);  // an in-place change of the weight re-derives the phase kernels
    EXPECT_TRUE(torch::allclose(upsample_conv3x3(x, wt, b, &k), torch::conv2d(upsample_nearest2x(x), wt, b, 1, 1), 0,
                                1e-12));
    wt.set_data(at::randn({co, ci, 3, 3}, gen, torch::kFloat64));  // so does new memory under the same tensor
    EXPECT_TRUE(torch::allclose(upsample_conv3x3(x, wt, b, &k), torch::conv2d(upsample_nearest2x(x), wt, b, 1, 1), 0,
                                1e-12));
  }
  // bf16 channels_last (the inference layout): within bf16 rounding of the float64 answer
  auto x = at::randn({1, 16, 9, 10}, gen), wt = at::randn({12, 16, 3, 3}, gen) * 0.1, b = at::randn({12}, gen);
  auto ref = torch::conv2d(upsample_nearest2x(x.to(torch::kFloat64)), wt.to(torch::kFloat64), b.to(torch::kFloat64), 1, 1);
  auto cl = torch::MemoryFormat::ChannelsLast;
  SubpixelKernels k;
  auto got = upsample_conv3x3(x.to(torch::kBFloat16).contiguous(cl), wt.to(torch::kBFloat16).contiguous(cl),
                              b.to(torch::kBFloat16), &k);
  EXPECT_TRUE(got.is_contiguous(cl));
  EXPECT_EQ(got.sizes(), ref.sizes());
  EXPECT_LT(((got.to(torch::kFloat64) - ref).norm() / ref.norm()).item<double>(), 1e-2);
  // the Upsample module takes the same path and agrees with its parts; with autograd it runs the plain
  // path, and gradients reach its weight
  Upsample up(16, 12, true);
  auto plain = up->conv->forward(upsample_nearest2x(x));
  EXPECT_TRUE(torch::allclose(up->forward(x), plain, 1e-5, 1e-5));
  torch::AutoGradMode on(true);
  up->forward(x).square().sum().backward();
  EXPECT_TRUE(up->conv->weight.grad().defined());
  EXPECT_GT(up->conv->weight.grad().abs().sum().item<double>(), 0);
}

TEST(NetworkAttention, EfficientPathEqualsExplicitSoftmax) {
  torch::manual_seed(2);
  auto q = torch::randn({6, 37, 8}), k = torch::randn({6, 29, 8}), v = torch::randn({6, 29, 5});
  const double scale = 1 / std::sqrt(8.0);
  auto ref = torch::bmm(torch::softmax(torch::bmm(q.to(torch::kFloat64), k.to(torch::kFloat64).transpose(1, 2)) * scale, -1),
                        v.to(torch::kFloat64));
  auto explicit_out = torch::bmm(attention_probs(q, k, scale), v);
  EXPECT_LT((explicit_out.to(torch::kFloat64) - ref).abs().max().item<double>(), 1e-5);
  for (int64_t chunk : {int64_t(1) << 30, int64_t(29 * 37 * 2), int64_t(29 * 5), int64_t(1)}) {
    {
      torch::NoGradGuard g;  // buffered in-place chunks
      auto o = scaled_dot_product_attention(q, k, v, scale, chunk);
      EXPECT_LT((o.to(torch::kFloat64) - ref).abs().max().item<double>(), 1e-5) << "chunk " << chunk;
    }
    auto qg = q.clone().requires_grad_(true);  // functional chunks under autograd
    auto o = scaled_dot_product_attention(qg, k, v, scale, chunk);
    EXPECT_LT((o.to(torch::kFloat64) - ref).abs().max().item<double>(), 1e-5) << "chunk " << chunk;
    o.sum().backward();
    EXPECT_TRUE(qg.grad().isfinite().all().item<bool>());
  }
  // The module: a probs hook switches to the explicit path; same output.
  AttentionBlock2d blk(8, 2, 4, "blk");
  {
    torch::NoGradGuard g;
    blk->proj_out->weight.normal_();
  }
  auto x = torch::randn({2, 8, 5, 6});
  Hooks hooks;
  torch::NoGradGuard g;
  auto a = blk->forward(x, &hooks);
  hooks.add("blk.probs", [](const std::string&, const torch::Tensor& p, const HookContext&) { return p; });
  auto b = blk->forward(x, &hooks);
  EXPECT_LT((a - b).abs().max().item<float>(), 1e-5);
}

// softmax(q k^T scale) v per (batch, head) in float64; q [B, H, Lq, d] -> [B, Lq, H * dv].
static torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                         double scale) {
  auto qd = q.to(torch::kFloat64), kd = k.to(torch::kFloat64), vd = v.to(torch::kFloat64);
  auto o = torch::matmul(torch::softmax(torch::matmul(qd, kd.transpose(2, 3)) * scale, -1), vd);  // [B, H, Lq, dv]
  return o.transpose(1, 2).reshape({q.size(0), q.size(2), -1});
}

TEST(NetworkAttention, FusedKernelEqualsFloat64Reference) {
  torch::manual_seed(21);
  torch::NoGradGuard g;
  for (bool portable : {false, true}) {
    tweedie::detail::force_portable_attention_kernels(portable);
    for (auto [Lq, Lk] : {std::pair<int64_t, int64_t>{37, 29}, {1, 300}, {700, 77}, {300, 1}}) {
      // Strided as the projections give them: [B, L, H, d] memory viewed as [B, H, L, d].
      auto q = torch::randn({2, Lq, 3, 8}).transpose(1, 2), k = torch::randn({2, Lk, 3, 8}).transpose(1, 2);
      auto v = torch::randn({2, Lk, 3, 5}).transpose(1, 2);
      q = q * 4;  // scores up to ~±50: the row maximum must be subtracted
      const double scale = 1 / std::sqrt(8.0);
      ASSERT_TRUE(tweedie::detail::fused_attention_applies(q, k, v));
      auto ref = attention_reference(q, k, v, scale);
      auto o = tweedie::detail::fused_attention(q, k, v, scale);
      ASSERT_EQ(o.sizes(), ref.sizes());
      EXPECT_LT((o.to(torch::kFloat64) - ref).abs().max().item<double>(), 2e-5) << Lq << "x" << Lk << " " << portable;
      // bf16: against the float64 answer on the same (rounded) inputs, within bf16 rounding.
      auto qb = q.to(torch::kBFloat16), kb = k.to(torch::kBFloat16), vb = v.to(torch::kBFloat16);
      auto refb = attention_reference(qb, kb, vb, scale);
      auto ob = tweedie::detail::fused_attention(qb, kb, vb, scale);
      EXPECT_EQ(ob.scalar_type(), torch::kBFloat16);
      EXPECT_LT((ob.to(torch::kFloat64) - refb).abs().max().item<double>(), 3e-2) << Lq << "x" << Lk << " " << portable;
      EXPECT_LT((ob.to(torch::kFloat64) - refb).abs().mean().item<double>(), 4e-3) << Lq << "x" << Lk;
    }
    // A NaN query row gives a NaN output row and leaves the others alone.
    auto q = torch::randn({1, 2, 5, 4}), k = torch::randn({1, 2, 6, 4}), v = torch::randn({1, 2, 6, 4});
    q[0][1][3][2] = std::nan("");
    auto o = tweedie::detail::fused_attention(q, k, v, 0.5);  // [1, 5, 8]: head 1 is columns 4..7
    EXPECT_TRUE(o[0][3].slice(0, 4, 8).isnan().all().item<bool>());
    EXPECT_TRUE(o[0][3].slice(0, 0, 4).isfinite().all().item<bool>());
    EXPECT_TRUE(o[0][2].isfinite().all().item<bool>());
  }
  tweedie::detail::force_portable_attention_kernels(false);
  // Not taken under autograd, for float64, or for a non-unit feature stride.
  auto q = torch::randn({1, 1, 4, 4}), k = torch::randn({1, 1, 4, 4});
  EXPECT_FALSE(tweedie::detail::fused_attention_applies(q.to(torch::kFloat64), k.to(torch::kFloat64), k.to(torch::kFloat64)));
  EXPECT_FALSE(tweedie::detail::fused_attention_applies(q.transpose(2, 3), k, k));
  {
    torch::AutoGradMode on(true);
    EXPECT_FALSE(tweedie::detail::fused_attention_applies(q, k, k));
  }
  // The buffered chunk path (float64 inference) still agrees with the reference.
  auto qd = torch::randn({6, 37, 8}, torch::kFloat64), kd = torch::randn({6, 29, 8}, torch::kFloat64),
       vd = torch::randn({6, 29, 5}, torch::kFloat64);
  auto refd = torch::bmm(torch::softmax(torch::bmm(qd, kd.transpose(1, 2)) * 0.3, -1), vd);
  for (int64_t chunk : {int64_t(29 * 37 * 2), int64_t(29 * 5), int64_t(1)})
    EXPECT_LT((scaled_dot_product_attention(qd, kd, vd, 0.3, chunk) - refd).abs().max().item<double>(), 1e-12);
}

TEST(NetworkAttention, CrossAttentionSitesAndShapes) {
  torch::manual_seed(3);
  Attention att(16, 4, /*context_dim=*/6, "x");
  auto x = torch::randn({2, 10, 16}), ctx = torch::randn({2, 7, 6});
  Hooks hooks;
  std::map<std::string, std::vector<int64_t>> seen;
  hooks.add("x.*", [&](const std::string& s, const torch::Tensor& v, const HookContext&) {
    seen[s] = v.sizes().vec();
    return v;
  });
  auto o = att->forward(x, ctx, &hooks);
  EXPECT_EQ(o.sizes(), (std::vector<int64_t>{2, 10, 16}));
  EXPECT_EQ(seen["x.q"], (std::vector<int64_t>{2, 4, 10, 4}));
  EXPECT_EQ(seen["x.k"], (std::vector<int64_t>{2, 4, 7, 4}));
  EXPECT_EQ(seen["x.v"], (std::vector<int64_t>{2, 4, 7, 4}));
  EXPECT_EQ(seen["x.probs"], (std::vector<int64_t>{8, 10, 7}));
  EXPECT_EQ(seen["x.out"], (std::vector<int64_t>{2, 10, 16}));
  EXPECT_NE(error_of([&] { att->forward(x, {}, nullptr); }).find("context"), std::string::npos);
}

// ------------------------------------------------------------------ networks

TEST(NetworkUNet, ShapesAt28And32WithAndWithoutClasses) {
  torch::manual_seed(4);
  for (const char* cfg : {kUNet28, kUNet32}) {
    auto net = make_network("unet", cfg);
    auto b = batch(*net, 3);
    auto out = run(*net, b);
    EXPECT_EQ(out.sizes(), b.x.sizes()) << cfg;
    EXPECT_TRUE(out.isfinite().all().item<bool>());
    perturb(*net);
    out = run(*net, b);
    EXPECT_TRUE(out.isfinite().all().item<bool>());
    EXPECT_GT(out.abs().max().item<float>(), 0.f);
    std::cout << "[params] unet " << net->sample_shape()[1] << "x" << net->sample_shape()[2] << ": "
              << param_count(*net) << "\n";
  }
  // out_channels != in_channels; a scalar time for the whole batch; resolution-4 attention at 28x28 (7x7).
  auto net = make_network("unet", R"({"in_channels":1,"out_channels":2,"image_size":28,"model_channels":8,
      "channel_mult":[1,1,2],"num_res_blocks":2,"attention_resolutions":[4],"num_heads":1,"norm_groups":4,
      "conv_resample":false})");
  torch::NoGradGuard g;
  auto out = net->forward(torch::randn({2, 1, 28, 28}), torch::tensor(5.0), {});
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 2, 28, 28}));
}

TEST(NetworkDiT, ShapesAndExactlyZeroAtInit) {
  torch::manual_seed(5);
  for (const char* cfg : {kDiT, kUViT}) {
    auto net = make_network("dit", cfg);
    auto b = batch(*net, 3);
    auto out = run(*net, b);
    EXPECT_EQ(out.sizes(), b.x.sizes()) << cfg;
    EXPECT_EQ(out.abs().max().item<float>(), 0.f) << "adaLN-Zero: the initial DiT outputs exactly zero";
    perturb(*net);
    out = run(*net, b);
    EXPECT_TRUE(out.isfinite().all().item<bool>());
    EXPECT_GT(out.abs().max().item<float>(), 0.f);
    std::cout << "[params] dit" << (std::string(cfg).find("long_skips") != std::string::npos ? " (long skips)" : "")
              << ": " << param_count(*net) << "\n";
  }
  // U-ViT layout: depth 5 -> blocks 3 and 4 take skips from blocks 1 and 0.
  auto net = make_network("dit", kUViT);
  int skips = 0;
  for (auto& p : net->named_parameters()) skips += p.key().find("skip_linear.weight") != std::string::npos;
  EXPECT_EQ(skips, 2);
  EXPECT_NE(net->named_parameters().find("blocks.3.skip_linear.weight"), nullptr);
  EXPECT_NE(net->named_parameters().find("blocks.4.skip_linear.weight"), nullptr);
}

TEST(NetworkDiT, PositionEmbeddingMatchesDiT) {
  auto pe = sincos_pos_embed_2d(8, 2, 3);  // D/4 = 2 frequencies: 1 and 1/100
  ASSERT_EQ(pe.sizes(), (std::vector<int64_t>{6, 8}));
  // token (row 1, col 2) = index 5: [sin(2), sin(0.02), cos(2), cos(0.02), sin(1), sin(0.01), cos(1), cos(0.01)]
  std::vector<double> want{std::sin(2.0), std::sin(0.02), std::cos(2.0), std::cos(0.02),
                           std::sin(1.0), std::sin(0.01), std::cos(1.0), std::cos(0.01)};
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(pe[5][i].item<double>(), want[i], 1e-6);
}

TEST(NetworkConditioning, NullClassDiffersFromClassZero) {
  torch::manual_seed(6);
  for (auto [arch, cfg] : {std::pair{"unet", kUNet28}, std::pair{"dit", kDiT}}) {
    auto net = make_network(arch, cfg);
    perturb(*net);
    auto b = batch(*net, 2);
    b.c.labels = torch::tensor({0, 0}, torch::kInt64);
    auto y0 = run(*net, b);
    b.c.labels = torch::tensor({-1, -1}, torch::kInt64);
    auto yn = run(*net, b);
    EXPECT_GT((y0 - yn).abs().max().item<float>(), 1e-4) << arch;
    b.c.labels = torch::Tensor();  // no labels = the null class
    EXPECT_TRUE(torch::equal(run(*net, b), yn)) << arch;
    b.c.labels = torch::tensor({0, 10}, torch::kInt64);
    EXPECT_NE(error_of([&] { run(*net, b); }).find("class label 10"), std::string::npos) << arch;
  }
  auto unc = make_network("dit", kUViT);
  auto b = batch(*unc, 2);
  b.c.labels = torch::tensor({1, 1}, torch::kInt64);
  EXPECT_NE(error_of([&] { run(*unc, b); }).find("unconditional"), std::string::npos);
  b.c.labels = torch::tensor({-1, -1}, torch::kInt64);
  EXPECT_NO_THROW(run(*unc, b));
  EXPECT_NE(error_of([&] { unc->forward(torch::randn({1, 2, 8, 8}), torch::tensor({1.0}), {}); }).find("[N, 2, 8, 12]"),
            std::string::npos);
}

// ------------------------------------------------------------------ hooks

TEST(NetworkHooks, ProbabilitiesAreSoftmaxRows) {
  torch::manual_seed(7);
  for (auto [arch, cfg, n_attn] : {std::tuple{"unet", kUNet28, 4}, std::tuple{"dit", kDiT, 3}}) {
    auto net = make_network(arch, cfg);
    perturb(*net);
    auto b = batch(*net, 2);
    auto plain = run(*net, b);
    Hooks& hooks = net->hooks();
    int calls = 0;
    hooks.add("*.probs", [&](const std::string& site, const torch::Tensor& p, const HookContext&) {
      ++calls;
      EXPECT_EQ(p.dim(), 3);
      EXPECT_EQ(p.scalar_type(), torch::kFloat32);
      EXPECT_LT((p.sum(-1) - 1).abs().max().item<float>(), 1e-5) << site;
      EXPECT_GE(p.min().item<float>(), 0.f);
      return p;
    });
    auto hooked = run(*net, b);
    hooks.clear();
    EXPECT_EQ(calls, n_attn) << arch;  // unet: down.1.attn.0, mid.attn.0, up.1.attn.{0,1}
    EXPECT_LT((hooked - plain).abs().max().item<float>(), 1e-5) << arch;
  }
}

TEST(NetworkHooks, ZeroAttentionOutputEqualsRemovedAttentionBranch) {
  torch::manual_seed(8);
  for (auto [arch, cfg, site, proj] : {std::tuple{"unet", kUNet28, "mid.attn.0.out", "mid.attn.0.proj_out."},
                                       std::tuple{"dit", kDiT, "blocks.1.attn.out", "blocks.1.attn.proj."}}) {
    auto net = make_network(arch, cfg);
    perturb(*net);
    auto b = batch(*net, 2);
    auto plain = run(*net, b);
    Hooks& hooks = net->hooks();
    hooks.add(site, [](const std::string&, const torch::Tensor& v, const HookContext&) { return torch::zeros_like(v); });
    auto hooked = run(*net, b);
    hooks.clear();
    // The same network with that attention's output projection zeroed: its branch adds exactly zero.
    auto removed = clone(*net);
    {
      torch::NoGradGuard g;
      for (auto& p : removed->named_parameters())
        if (p.key().rfind(proj, 0) == 0) p.value().zero_();
    }
    auto ref = run(*removed, b);
    EXPECT_TRUE(torch::equal(hooked, ref)) << arch;
    EXPECT_GT((hooked - plain).abs().max().item<float>(), 1e-5) << arch;
  }
}

TEST(NetworkHooks, SkipTembBlockAndQKVSites) {
  torch::manual_seed(9);
  auto net = make_network("unet", kUNet28);
  perturb(*net);
  auto b = batch(*net, 2);
  auto plain = run(*net, b);
  Hooks& hooks = net->hooks();
  std::map<std::string, std::vector<int64_t>> seen;
  hooks.add("*", [&](const std::string& s, const torch::Tensor& v, const HookContext&) {
    seen[s] = v.sizes().vec();
    return v;
  });
  // Observing hooks change nothing beyond rounding (a probs hook makes the
  // attention take its explicit path instead of the fused kernel).
  EXPECT_TRUE(torch::allclose(run(*net, b), plain, 1e-5, 1e-6));
  EXPECT_EQ(seen["temb"], (std::vector<int64_t>{2, 64}));
  // skips: conv_in, 3 levels x 1 resblock, 2 downsamples = 6
  EXPECT_EQ(seen.count("skip.5"), 1u);
  EXPECT_EQ(seen.count("skip.6"), 0u);
  EXPECT_EQ(seen["skip.0"], (std::vector<int64_t>{2, 16, 28, 28}));
  EXPECT_EQ(seen["skip.5"], (std::vector<int64_t>{2, 32, 7, 7}));
  EXPECT_EQ(seen["down.1.res.0.out"], (std::vector<int64_t>{2, 32, 14, 14}));
  EXPECT_EQ(seen["down.1.attn.0.q"], (std::vector<int64_t>{2, 2, 196, 16}));
  EXPECT_EQ(seen["down.1.attn.0.probs"], (std::vector<int64_t>{4, 196, 196}));
  EXPECT_EQ(seen["mid.attn.0.out"], (std::vector<int64_t>{2, 49, 32}));
  EXPECT_EQ(seen.count("up.0.res.1.out"), 1u);
  // FreeU-style: scaling a skip connection changes the output.
  hooks.clear();
  hooks.add("skip.3", [](const std::string&, const torch::Tensor& v, const HookContext&) { return v * 0.5; });
  EXPECT_GT((run(*net, b) - plain).abs().max().item<float>(), 1e-5);
  hooks.clear();

  auto dit = make_network("dit", kDiT);
  perturb(*dit);
  seen.clear();
  dit->hooks().add("blocks.*", [&](const std::string& s, const torch::Tensor& v, const HookContext&) {
    seen[s] = v.sizes().vec();
    return v;
  });
  run(*dit, batch(*dit, 2));
  EXPECT_EQ(seen["blocks.2.out"], (std::vector<int64_t>{2, 49, 32}));
  EXPECT_EQ(seen["blocks.0.attn.k"], (std::vector<int64_t>{2, 4, 49, 8}));
  EXPECT_EQ(seen["blocks.0.attn.probs"], (std::vector<int64_t>{8, 49, 49}));
}

// ------------------------------------------------------------------ precision and gradients

TEST(NetworkPrecision, Bf16AgreesWithFp32) {
  torch::manual_seed(10);
  for (auto [arch, cfg] : {std::pair{"unet", kUNet28}, std::pair{"unet", kUNet32}, std::pair{"dit", kDiT},
                           std::pair{"dit", kUViT}}) {
    auto net = make_network(arch, cfg);
    perturb(*net);
    auto b = batch(*net, 2);
    auto ref = run(*net, b);
    auto bf = clone(*net);
    bf->to(torch::kBFloat16);
    auto out = run(*bf, b);
    EXPECT_EQ(out.scalar_type(), torch::kFloat32);  // output in the input's dtype
    // UNets stay below 5 % on CPUs with bf16 arithmetic (AVX-512 BF16, AMX; this test's earlier bound) and
    // measured 6.1-6.5 % on an AVX2-only EPYC,
    // where oneDNN has no bf16 kernels and torch's fallback convolutions round more; DiTs < 1 %.
    const double tol = 0.08;
    const double e = rel_err(out, ref);
    EXPECT_LT(e, tol) << arch << " " << cfg;
    std::cout << "[bf16] " << arch << " relative error " << e << "\n";
    // channels_last bf16 input goes through the same fp32 normalization
    auto b2 = b;
    b2.x = b.x.to(torch::kBFloat16).contiguous(torch::MemoryFormat::ChannelsLast);
    EXPECT_LT(rel_err(run(*bf, b2).to(torch::kFloat32), ref), tol) << arch;
  }
}

TEST(NetworkGradients, ReachEveryParameter) {
  for (auto [arch, cfg] : {std::pair{"unet", kUNet28}, std::pair{"unet", kUNet32}, std::pair{"dit", kDiT},
                           std::pair{"dit", kUViT}}) {
    torch::manual_seed(11);
    auto net = make_network(arch, cfg);
    net->train();
    auto b = batch(*net, 3);
    if (net->num_classes() > 0) b.c.labels = torch::tensor({-1, 0, 3}, torch::kInt64);
    // At initialization: every gradient defined and finite (zero-initialized layers block most of them).
    net->forward(b.x, b.t, b.c).pow(2).mean().backward();
    for (auto& p : net->named_parameters()) {
      ASSERT_TRUE(p.value().grad().defined()) << arch << " " << p.key();
      EXPECT_TRUE(p.value().grad().isfinite().all().item<bool>()) << arch << " " << p.key();
    }
    // With every weight nonzero, every parameter gets a nonzero gradient.
    net->zero_grad();
    perturb(*net);
    auto target = torch::randn_like(b.x);
    (net->forward(b.x, b.t, b.c) - target).pow(2).mean().backward();
    for (auto& p : net->named_parameters()) {
      auto g = p.value().grad();
      ASSERT_TRUE(g.defined()) << arch << " " << p.key();
      EXPECT_TRUE(g.isfinite().all().item<bool>()) << arch << " " << p.key();
      EXPECT_GT(g.abs().max().item<float>(), 0.f) << arch << " " << p.key();
    }
  }
}

// ------------------------------------------------------------------ files

TEST(NetworkIO, SafetensorsRoundTripIsBitIdentical) {
  torch::manual_seed(12);
  for (auto [arch, cfg] : {std::pair{"unet", kUNet28}, std::pair{"unet", kUNet32}, std::pair{"dit", kUViT}}) {
    auto net = make_network(arch, cfg);
    perturb(*net);
    const std::string path = tmp(std::string(arch) + ".safetensors");
    save_network(path, *net, {{"tweedie.training", "{\"steps\":1}"}});
    std::map<std::string, std::string> meta;
    auto back = load_network(path, &meta);
    EXPECT_EQ(back->arch(), arch);
    EXPECT_EQ(back->config_json(), net->config_json());
    EXPECT_EQ(meta["tweedie.training"], "{\"steps\":1}");
    EXPECT_EQ(meta["tweedie.arch"], arch);
    auto b = batch(*net, 2);
    EXPECT_TRUE(torch::equal(run(*back, b), run(*net, b))) << arch;
    // Into an existing network of the same architecture.
    auto other = make_network(arch, cfg);
    load_network_weights(path, *other);
    EXPECT_TRUE(torch::equal(run(*other, b), run(*net, b))) << arch;
  }
}

TEST(NetworkIO, WrongArchitectureMissingOrMisshapedTensorsAreClearErrors) {
  torch::manual_seed(13);
  auto unet = make_network("unet", kUNet28);
  auto dit = make_network("dit", kDiT);
  const std::string dpath = tmp("dit.safetensors");
  save_network(dpath, *dit);
  auto e = error_of([&] { load_network_weights(dpath, *unet); });
  EXPECT_NE(e.find(dpath), std::string::npos) << e;
  EXPECT_NE(e.find("'dit'"), std::string::npos) << e;

  // DiT tensors under UNet metadata: missing and unexpected names listed.
  auto tensors = network_tensors(*dit);
  const std::string mixed = tmp("mixed.safetensors");
  save_safetensors(mixed, tensors, {{"tweedie.arch", "unet"}, {"tweedie.config", unet->config_json()}});
  e = error_of([&] { load_network(mixed); });
  EXPECT_NE(e.find(mixed), std::string::npos) << e;
  EXPECT_NE(e.find("missing"), std::string::npos) << e;
  EXPECT_NE(e.find("unexpected"), std::string::npos) << e;
  EXPECT_NE(e.find("unexpected blocks.0."), std::string::npos) << e;

  // One tensor missing / one of the wrong shape.
  auto meta = std::map<std::string, std::string>{{"tweedie.arch", "dit"}, {"tweedie.config", dit->config_json()}};
  auto fewer = tensors;
  fewer.erase(fewer.begin() + 3);
  const std::string fpath = tmp("fewer.safetensors");
  save_safetensors(fpath, fewer, meta);
  e = error_of([&] { load_network(fpath); });
  EXPECT_NE(e.find("missing " + tensors[3].first), std::string::npos) << e;
  auto bad = tensors;
  bad[0].second = torch::zeros({2, 2});
  const std::string bpath = tmp("badshape.safetensors");
  save_safetensors(bpath, bad, meta);
  e = error_of([&] { load_network(bpath); });
  EXPECT_NE(e.find("wrong shape " + tensors[0].first + " [2, 2]"), std::string::npos) << e;

  // No tweedie metadata; a bad config in the metadata.
  const std::string raw = tmp("raw.safetensors");
  save_safetensors(raw, tensors, {});
  EXPECT_NE(error_of([&] { load_network(raw); }).find("not a tweedie network"), std::string::npos);
  const std::string badcfg = tmp("badcfg.safetensors");
  save_safetensors(badcfg, tensors, {{"tweedie.arch", "dit"}, {"tweedie.config", "{\"depth\":0}"}});
  e = error_of([&] { load_network(badcfg); });
  EXPECT_NE(e.find(badcfg), std::string::npos) << e;
  EXPECT_NE(e.find("'depth'"), std::string::npos) << e;
}

// ------------------------------------------------------------------ configs

TEST(NetworkConfig, FullConfigRoundTripsExactly) {
  for (auto [arch, cfg] : {std::pair{"unet", kUNet28}, std::pair{"unet", kUNet32}, std::pair{"dit", kDiT},
                           std::pair{"dit", kUViT}}) {
    auto net = make_network(arch, cfg);
    auto full = net->config_json();
    EXPECT_EQ(make_network(arch, full)->config_json(), full);
    auto j = nlohmann::json::parse(full);
    EXPECT_TRUE(j.contains("height") && j.contains("width") && j.contains("num_classes") && j.contains("time_scale"));
  }
  // Defaults, without building the (large) default networks.
  auto u = UNetConfig::from_json("{}");
  EXPECT_EQ(UNetConfig::from_json(u.to_json()).to_json(), u.to_json());
  auto d = DiTConfig::from_json("{\"in_channels\":3,\"mlp_ratio\":2.5}");
  EXPECT_EQ(d.out_channels, 3);
  EXPECT_EQ(DiTConfig::from_json(d.to_json()).to_json(), d.to_json());
  EXPECT_EQ(nlohmann::json::parse(u.to_json()).size(), 18u);
  EXPECT_EQ(nlohmann::json::parse(d.to_json()).size(), 13u);
}

TEST(NetworkConfig, BadConfigsNameTheKey) {
  struct Case {
    const char *arch, *cfg, *want;
  };
  const Case cases[] = {
      {"unet", R"({"foo":1})", "unknown key 'foo'"},
      {"unet", R"({"channel_mult":[]})", "'channel_mult' = []"},
      {"unet", R"({"channel_mult":[1,0]})", "'channel_mult'"},
      {"unet", R"({"model_channels":"abc"})", "'model_channels' = \"abc\""},
      {"unet", R"({"model_channels":16.5})", "'model_channels'"},
      {"unet", R"({"dropout":-0.1})", "'dropout' = -0.1"},
      {"unet", R"({"dropout":1})", "'dropout'"},
      {"unet", R"({"image_size":28,"channel_mult":[1,2,2,2]})", "'height' = 28"},
      {"unet", R"({"image_size":28,"height":28})", "'image_size'"},
      {"unet", R"({"attention_resolutions":[16],"channel_mult":[1,2,2]})", "'attention_resolutions'"},
      {"unet", R"({"model_channels":32,"num_heads":3,"norm_groups":8})", "'num_heads' = 3"},
      {"unet", R"({"model_channels":32,"head_channels":12,"norm_groups":8})", "'head_channels' = 12"},
      {"unet", R"({"model_channels":16})", "'norm_groups' = 32"},
      {"unet", R"({"num_classes":-1})", "'num_classes'"},
      {"unet", R"({"use_scale_shift_norm":1})", "'use_scale_shift_norm'"},
      {"unet", R"({"time_embedding":"learned"})", "'time_embedding'"},
      {"unet", R"({"time_scale":0})", "'time_scale'"},
      {"unet", R"([1,2])", "expected a JSON object"},
      {"unet", R"({"in_channels":)", "malformed JSON"},
      {"dit", R"({"image_size":30,"patch_size":4})", "'patch_size' = 4"},
      {"dit", R"({"hidden_size":30,"num_heads":4})", "'num_heads' = 4"},
      {"dit", R"({"hidden_size":6,"num_heads":3})", "'hidden_size' = 6"},
      {"dit", R"({"mlp_ratio":0})", "'mlp_ratio'"},
      {"dit", R"({"long_skips":true,"depth":2})", "'long_skips'"},
      {"dit", R"({"depth":2.5})", "'depth'"},
      {"dit", R"({"depth":0})", "'depth'"},
      {"dit", R"({"learn_sigma":true})", "unknown key 'learn_sigma'"},
      {"vae", R"({})", "unknown network architecture 'vae'"},
  };
  for (auto& c : cases) {
    auto e = error_of([&] { make_network(c.arch, c.cfg); });
    EXPECT_NE(e.find(c.want), std::string::npos) << c.arch << " " << c.cfg << " -> '" << e << "'";
  }
}
