// Frequency-Decoupled Guidance and Skip-Layer Guidance, the CFG variants of
// frequency_decoupled_guidance.h and skip_layer_guidance.h: each against its
// defining property (FDG: the pyramid sums back exactly, equal band scales
// are CFG, a difference inside one band is guided with that band's scale;
// SLG: the skipping branch is the network with the layers' residual
// branches removed from its weights, only inside the step window), and bad
// input.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/guide/apg.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/guide/frequency_decoupled_guidance.h"
#include "tweedie/guide/guidance.h"
#include "tweedie/guide/skip_layer_guidance.h"
#include "tweedie/models/gmm.h"
#include "tweedie/models/net_denoiser.h"
#include "tweedie/models/network.h"
#include "tweedie/process/process.h"

using namespace tweedie;
using namespace tweedie::testing;

namespace {

using tweedie::testing::error_of;

double max_abs(const torch::Tensor& t) { return t.abs().max().item<double>(); }

torch::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, torch::kFloat64);
}

Cond labels(std::vector<int64_t> l) {
  Cond c;
  c.labels = torch::tensor(l, torch::kInt64);
  return c;
}

// x0 = A on rows with a class, B on the null rows: CFG's two branches, fixed.
class TwoImages : public Denoiser {
 public:
  TwoImages(torch::Tensor a, torch::Tensor b) : a_(std::move(a)), b_(std::move(b)), p_(make_process("vp")) {}
  const Process& process() const override { return *p_; }
  Prediction predict(const torch::Tensor& x, double s, const Cond& c) override {
    auto cond = (c.labels >= 0).to(torch::kFloat64).view({-1, 1, 1, 1});
    const int64_t copies = x.size(0) / a_.size(0);
    return Prediction::from_x0(a_.repeat({copies, 1, 1, 1}) * cond + b_.repeat({copies, 1, 1, 1}) * (1 - cond), x, s,
                               *p_);
  }

 private:
  torch::Tensor a_, b_;
  ProcessPtr p_;
};

// ---- FDG ----

TEST(FDG, ThePyramidSumsBackExactlyAndSortsFrequencies) {
  for (auto shape : {std::vector<int64_t>{2, 3, 16, 16}, {1, 4, 9, 12}, {1, 1, 5, 5}}) {
    const auto x = randn(shape, 1);
    for (int levels : {1, 2, 3}) {
      const auto bands = laplacian_pyramid(x, levels);
      ASSERT_EQ(int(bands.size()), levels);
      EXPECT_LT(max_abs(from_laplacian_pyramid(bands) - x), 1e-12) << levels;
    }
  }
  // A constant image is all coarsest band; a checkerboard (which the binomial blur removes) all finest band.
  const auto flat = torch::full({1, 2, 8, 8}, 0.7, torch::kFloat64);
  auto b = laplacian_pyramid(flat, 3);
  EXPECT_LT(max_abs(b[0]) + max_abs(b[1]), 1e-12);
  EXPECT_LT(max_abs(b[2] - 0.7), 1e-12);
  EXPECT_EQ(b[2].sizes(), (std::vector<int64_t>{1, 2, 2, 2}));
  auto i = torch::arange(8, torch::kFloat64);
  const auto checker = (1 - 2 * torch::remainder(i.view({8, 1}) + i.view({1, 8}), 2)).view({1, 1, 8, 8});
  b = laplacian_pyramid(checker, 2);
  EXPECT_LT(max_abs(b[0] - checker), 1e-12);
  EXPECT_LT(max_abs(b[1]), 1e-12);
  EXPECT_NE(error_of([&] { laplacian_pyramid(torch::zeros({1, 1, 2, 2}), 3); }).find("3 levels need images"),
            std::string::npos);
}

TEST(FDG, EqualScalesAreCFGAndEachBandTakesItsOwnScale) {
  const auto a = randn({2, 3, 8, 8}, 2), b = randn({2, 3, 8, 8}, 3), x = randn({2, 3, 8, 8}, 4);
  const double s = 0.9;
  const Cond c = labels({0, 1});
  auto base = std::make_shared<TwoImages>(a, b);
  CFGOptions cfg;
  cfg.scale = 6;
  const auto plain = CFGDenoiser(base, cfg).predict(x, s, c).x0();
  EXPECT_LT(max_abs(plain - (b + 6 * (a - b))), 1e-10);
  EXPECT_LT(max_abs(FDGDenoiser(base, cfg, {{6}}).predict(x, s, c).x0() - plain), 1e-10);
  EXPECT_LT(max_abs(FDGDenoiser(base, cfg, {{6, 6, 6}}).predict(x, s, c).x0() - plain), 1e-10);
  // A - B constant per image: all in the coarsest band, guided with its scale (2), not with --cfg's (6).
  auto shifted = std::make_shared<TwoImages>(b + 0.5, b);
  EXPECT_LT(max_abs(FDGDenoiser(shifted, cfg, {{2}}).predict(x, s, c).x0() - (b + 2 * 0.5)), 1e-10);
  EXPECT_LT(max_abs(FDGDenoiser(shifted, cfg, {{4, 2}}).predict(x, s, c).x0() - (b + 2 * 0.5)), 1e-10);
  // A - B a checkerboard: all in the finest band, guided with --cfg's scale whatever the others.
  auto i = torch::arange(8, torch::kFloat64);
  const auto checker = (1 - 2 * torch::remainder(i.view({8, 1}) + i.view({1, 8}), 2)).view({1, 1, 8, 8}) * 0.3;
  auto fine = std::make_shared<TwoImages>(b + checker, b);
  EXPECT_LT(max_abs(FDGDenoiser(fine, cfg, {{2}}).predict(x, s, c).x0() - (b + 6 * checker)), 1e-10);
  // In general it lies between the two, and differs from CFG.
  const auto two = FDGDenoiser(base, cfg, {{2}}).predict(x, s, c).x0();
  EXPECT_GT(max_abs(two - plain), 1e-2);
  // eta = 0 drops each band update's part parallel to the conditional band: with x0(neg) = x0(c) / 2 the whole
  // update is parallel, band by band, and nothing is left of the guidance; eta = 1 is CFG.
  auto halved = std::make_shared<TwoImages>(a, a * 0.5);
  EXPECT_LT(max_abs(FDGDenoiser(halved, cfg, {{2}, 0.0}).predict(x, s, c).x0() - a), 1e-10);
  EXPECT_LT(max_abs(FDGDenoiser(halved, cfg, {{6}, 1.0}).predict(x, s, c).x0() - (a * 0.5 + 6 * (a * 0.5))), 1e-10);
  // A CFG schedule scales every band alike: at w(s) = 1 + (w - 1) / 2 the coarse band gets 1 + (2 - 1) / 2.
  CFGOptions half = cfg;
  half.scale_at = [](double) { return 3.5; };
  EXPECT_LT(max_abs(FDGDenoiser(shifted, half, {{2}}).predict(x, s, c).x0() - (b + 1.5 * 0.5)), 1e-10);
}

TEST(FDG, ThroughTheRegistry) {
  const auto a = randn({1, 1, 8, 8}, 5), b = randn({1, 1, 8, 8}, 6), x = randn({1, 1, 8, 8}, 7);
  auto base = std::make_shared<TwoImages>(a, b);
  GuidanceOptions g(10);
  g.set("fdg", "5");
  auto d = make_guidance(base, g);
  CFGOptions cfg;
  cfg.scale = 10;
  EXPECT_LT(max_abs(d->predict(x, 0.5, labels({1})).x0() - FDGDenoiser(base, cfg, {{5}}).predict(x, 0.5, labels({1})).x0()),
            1e-12);
  EXPECT_EQ(g.describe(), "cfg 10, FDG bands 5");
  GuidanceOptions bad(10);
  bad.set("fdg", "5,x");
  EXPECT_EQ(error_of([&] { make_guidance(base, bad); }),
            "--fdg: 'x' is not a number (give the coarser bands' scales, finest first, e.g. 5 or 7,5)");
  GuidanceOptions off;
  off.set("fdg", "5");
  EXPECT_EQ(error_of([&] { make_guidance(base, off); }), "--fdg needs guidance: give --cfg other than 1");
  GuidanceOptions both(10);
  both.set("fdg", "5").set("apg", 0.0);
  EXPECT_EQ(error_of([&] { make_guidance(base, both); }), "--apg and --fdg both replace cfg; give one");
}

// ---- SLG ----

// Random weights everywhere (a trained network's zero-initialized output projections would hide the layers).
std::shared_ptr<NetDenoiser> random_net(const std::string& arch, const std::string& config) {
  auto net = make_network(arch, config);
  torch::NoGradGuard ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
  for (auto& p : net->parameters()) p.copy_(at::randn(p.sizes(), gen, p.options()) * 0.2);
  net->eval();
  return std::make_shared<NetDenoiser>(net, make_process("vp"), Parameterization{PredKind::Eps});
}

const char* kSd = R"({"unet": {"height": 8, "width": 8, "model_channels": 8, "channel_mult": [1, 2],
    "num_res_blocks": 1, "attention_resolutions": [1, 2], "transformer_depth": [1, 1], "transformer_depth_middle": 1,
    "num_head_channels": 4, "context_dim": 16, "use_linear_in_transformer": true, "norm_groups": 4},
    "text_encoder": {"vocab_size": 100, "width": 16, "layers": 1, "heads": 2, "intermediate": 32,
    "projection_dim": 0, "activation": "gelu"}})";

// The prediction with every listed parameter (name contains one of `parts`) set to zero, restored after.
torch::Tensor x0_with_zeroed(const std::shared_ptr<NetDenoiser>& net, const std::vector<std::string>& parts,
                             const torch::Tensor& x, double s, const Cond& c) {
  torch::NoGradGuard ng;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> saved;
  for (auto& p : net->network().named_parameters()) {
    for (const auto& part : parts)
      if (p.key().find(part) != std::string::npos) {
        saved.emplace_back(p.value(), p.value().clone());
        p.value().zero_();
        break;
      }
  }
  EXPECT_FALSE(saved.empty());
  auto out = net->predict(x, s, c).x0();
  for (auto& [p, v] : saved) p.copy_(v);
  return out;
}

TEST(SLG, TheSkippingBranchIsTheNetworkWithoutTheLayers) {
  auto net = random_net("sd", kSd);
  const Network& nw = net->network();
  const auto layers = skip_layer_paths(nw);
  ASSERT_GE(layers.size(), 4u);
  EXPECT_EQ(layers.front(), "input_blocks.1.1.transformer_blocks.0");
  EXPECT_EQ(middle_skip_layer(nw), "middle_block.1.transformer_blocks.0");
  EXPECT_NE(std::find(layers.begin(), layers.end(), "middle_block.1.transformer_blocks.0"), layers.end());
  EXPECT_EQ(skip_layers(nw, "0,2", "slg-layers"), (std::vector<std::string>{layers[0], layers[2]}));

  const int64_t n = 2;
  Cond c;
  c.context = randn({n, 5, 16}, 11).to(torch::kFloat32);
  const auto x = randn({n, 4, 8, 8}, 12).to(torch::kFloat32);
  const double s = 1.5, w = 3, scale = 2;
  torch::NoGradGuard ng;
  const auto xc = net->predict(x, s, c).x0(), xu = net->predict(x, s, c.null_like()).x0();
  const std::vector<std::string> chosen = {layers[0], layers[2]};
  std::vector<std::string> parts;
  for (const auto& l : chosen)
    for (const char* m : {".attn1.to_out.", ".attn2.to_out.", ".ff.net.2."}) parts.push_back(l + m);
  const auto skipped = x0_with_zeroed(net, parts, x, s, c);
  EXPECT_GT(max_abs(skipped - xc), 1e-3);
  CFGOptions cfg;
  cfg.scale = w;
  PAGDenoiser slg(net, net, skip_layer_options(scale, chosen, 0.0, 1.0), cfg);
  const auto got = slg.predict(x, s, c).x0();
  EXPECT_LT(max_abs(got - (xu + w * (xc - xu) + scale * (xc - skipped))), 1e-4);
  // Outside the step window it is CFG alone; inside, it acts.
  PAGDenoiser windowed(net, net, skip_layer_options(scale, chosen, 0.25, 0.5), cfg);
  for (int step : {0, 2, 3, 7}) {
    StepScope st(step, 8);
    const auto out = windowed.predict(x, s, c).x0();
    const bool inside = step == 2 || step == 3;
    EXPECT_LT(max_abs(out - (inside ? got : xu + w * (xc - xu))), 1e-4) << step;
  }
  // The network is left as it was.
  EXPECT_LT(max_abs(net->predict(x, s, c).x0() - xc), 1e-6);
}

TEST(SLG, DiTBlocksAndTheClassUNetsAttentionStage) {
  auto dit = random_net("dit", R"({"in_channels":1,"image_size":8,"patch_size":4,"hidden_size":16,"depth":2,
                                  "num_heads":2,"num_classes":3})");
  EXPECT_EQ(skip_layer_paths(dit->network()), (std::vector<std::string>{"blocks.0", "blocks.1"}));
  auto unet = random_net("unet", R"({"in_channels":1,"image_size":8,"model_channels":8,"channel_mult":[1,2],
                                   "num_res_blocks":1,"attention_resolutions":[2],"num_heads":2,"norm_groups":4,
                                   "num_classes":3})");
  EXPECT_EQ(middle_skip_layer(unet->network()), "mid.attn");
  const auto x = randn({2, 1, 8, 8}, 13).to(torch::kFloat32);
  const Cond c = labels({0, 2});
  const double s = 1.2;
  torch::NoGradGuard ng;
  struct Case {
    std::shared_ptr<NetDenoiser> net;
    std::string layer;
    std::vector<std::string> parts;
  };
  for (const Case& k : {Case{dit, "blocks.1", {"blocks.1.attn.proj.", "blocks.1.mlp.fc2."}},
                        Case{unet, "mid.attn", {"mid.attn.0.proj_out."}}}) {
    const auto xc = k.net->predict(x, s, c).x0();
    const auto skipped = x0_with_zeroed(k.net, k.parts, x, s, c);
    PAGDenoiser slg(k.net, k.net, skip_layer_options(1.0, {k.layer}, 0, 1), CFGOptions{});
    EXPECT_LT(max_abs(slg.predict(x, s, c).x0() - (2 * xc - skipped)), 1e-4) << k.layer;
  }
}

TEST(SLG, ThroughTheRegistryAndBadLayers) {
  auto net = random_net("sd", kSd);
  GuidanceOptions g(3);
  g.set("slg", 2.0).set("slg-layers", "0,99");
  EXPECT_EQ(error_of([&] { make_guidance(net, g); }),
            "--slg-layers: layer 99 is beyond the sd network's 7 transformer layers (0..6)");
  g.set("slg-layers", "middle_block.1.transformer_blocks.7");
  Cond c;
  c.context = randn({1, 5, 16}, 14).to(torch::kFloat32);
  const auto x = randn({1, 4, 8, 8}, 15).to(torch::kFloat32);
  EXPECT_EQ(error_of([&] { make_guidance(net, g)->predict(x, 1.0, c); }),
            "SLG: the sd network has no transformer layer at 'middle_block.1.transformer_blocks.7.*' (sites are layer "
            "paths like middle_block.1.transformer_blocks.0 or indices)");
  g.set("slg-layers", "0").set("slg-window", "0.5,0.2");
  EXPECT_EQ(error_of([&] { make_guidance(net, g); }),
            "SLG: the step window must satisfy 0 <= start < stop <= 1 (got 0.5,0.2)");
  GuidanceOptions ok(3);
  ok.set("slg", 2.0);
  EXPECT_EQ(ok.describe(), "cfg 3, SLG 2 steps 0.01,0.2");
  torch::NoGradGuard ng;
  CFGOptions cfg;
  cfg.scale = 3;
  const auto want =
      PAGDenoiser(net, net, skip_layer_options(2.0, {"middle_block.1.transformer_blocks.0"}, 0.01, 0.2), cfg)
          .predict(x, 1.0, c)
          .x0();
  EXPECT_LT(max_abs(make_guidance(net, ok)->predict(x, 1.0, c).x0() - want), 1e-6);
  GuidanceOptions both(3);
  both.set("slg", 2.0).set("pag", 1.0);
  EXPECT_EQ(error_of([&] { make_guidance(net, both); }), "--pag and --slg both replace cfg; give one");
}

}  // namespace
