// Attention-loss guidance (guide/attention_loss.h): Attend-and-Excite and
// layout guidance. Their losses on hand-made maps against closed forms, the
// update lowering the loss on a tiny Stable Diffusion UNet, generate()'s
// stepwise runs (an identity update changes nothing, hooks see the whole
// run's steps), the command line, and bad input.
#include <gtest/gtest.h>

#include <cmath>

#include "cli_testing.h"
#include "sd_testing.h"
#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/guide/attend_and_excite.h"
#include "tweedie/guide/layout_guidance.h"
#include "tweedie/nn/hooks.h"
#include "tweedie/pipelines/stable_diffusion.h"
#include "tweedie/process/schedule.h"
#include "tweedie/sample/generate.h"

using namespace tweedie;

namespace {

using tweedie::testing::error_of;

CrossAttentionLayer layer(const std::string& site, int64_t side, torch::Tensor probs) {
  return {site, side, side, probs.to(torch::kFloat64)};
}

TEST(AttendAndExcite, LossOnHandMadeMaps) {
  // 4 x 4 maps (the quarter side of a 16 x 16 latent), context of 8 tokens, text tokens 1..3.
  auto A = torch::zeros({1, 16, 8});
  const int64_t peak = 5;  // row 1, column 1: inside, so the 3 x 3 smoothing sees all its neighbours
  A[0][peak][1] = 1;
  const std::vector<CrossAttentionLayer> maps = {layer("output_blocks.1.1.transformer_blocks.0.attn2", 4, A),
                                                 layer("input_blocks.1.1.transformer_blocks.0.attn2", 8,
                                                       torch::rand({1, 64, 8}))};
  // After softmax(100 A) over tokens 1..3: token 1 is ~1 at the peak and 1/3 elsewhere; token 2 ~0 there, 1/3 elsewhere.
  const double e = std::exp(-1.0), c0 = 1 / std::pow(1 + 2 * e, 2);
  const double m1 = c0 + (1 - c0) / 3;
  auto one = attend_and_excite_loss(maps, {{1}}, 3, 16);
  EXPECT_NEAR(one.item<double>(), 1 - m1, 1e-9);
  auto both = attend_and_excite_loss(maps, {{1}, {2}}, 3, 16);
  EXPECT_NEAR(both.item<double>(), 2.0 / 3, 1e-9);  // the neglected subject: max 1/3 away from the peak
  // A subject of two tokens sums their columns: tokens 1 and 2 together are ~1 at the peak, 2/3 elsewhere.
  EXPECT_NEAR(attend_and_excite_loss(maps, {{1, 2}}, 3, 16).item<double>(), 1 - (c0 + (1 - c0) * 2 / 3), 1e-9);
  EXPECT_NE(error_of([&] { attend_and_excite_loss(maps, {{5}}, 3, 16); }).find("token 5 is not a text token"),
            std::string::npos);
}

TEST(LayoutGuidance, EnergyOnHandMadeMapsAndBoxes) {
  auto inside = torch::zeros({2, 4, 6});
  inside[0][0][1] = 0.8;  // sample 0: word token 1 attends only to the top-left pixel of a 2 x 2 grid
  inside[1].select(1, 1).fill_(0.25);  // sample 1: uniformly
  const std::vector<CrossAttentionLayer> maps = {
      layer("output_blocks.0.1.transformer_blocks.0.attn2", 2, inside),
      layer("input_blocks.1.1.transformer_blocks.0.attn2", 2, torch::rand({2, 4, 6}))};  // encoder: not used
  const auto boxes = parse_layout("sneaker:0,0,0.5,0.5");
  auto E = layout_loss(maps, {{1}}, boxes);
  EXPECT_NEAR(E[0].item<double>(), 0.0, 1e-12);
  EXPECT_NEAR(E[1].item<double>(), 0.75 * 0.75, 1e-12);
  // two words: the mean of their terms; a layer of the middle block counts too (two layers: sums)
  auto maps2 = maps;
  maps2.push_back(layer("middle_block.1.transformer_blocks.0.attn2", 2, inside));
  auto E2 = layout_loss(maps2, {{1}, {1}}, parse_layout("a:0,0,0.5,0.5|b:0,0,1,0.5"));
  EXPECT_NEAR(E2[1].item<double>(), 2 * (0.75 * 0.75 + 0.5 * 0.5) / 2, 1e-12);
  EXPECT_NEAR(E2[0].item<double>(), 0.0, 1e-12);

  EXPECT_EQ(parse_layout(" bag :0.5,0.5,1,1").front().word, "bag");
  const std::string form = " (give WORD:X0,Y0,X1,Y1 boxes as fractions of the image, separated by |)";
  EXPECT_EQ(error_of([] { parse_layout("bag"); }), "--layout: 'bag' has no word" + form);
  EXPECT_EQ(error_of([] { parse_layout("bag:0,0,1"); }), "--layout: 'bag:0,0,1' needs four numbers" + form);
  EXPECT_EQ(error_of([] { parse_layout("bag:0,0,x,1"); }), "--layout: 'x' in 'bag:0,0,x,1' is not a number" + form);
  EXPECT_EQ(error_of([] { parse_layout("bag:0.5,0,0.5,1"); }),
            "--layout: the box of 'bag' must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1" + form);
}

StableDiffusion& pipeline() {
  static const std::string dir = tweedie::testing::tiny_sd_folder("attention_guidance_model", 43);
  static StableDiffusion sd(dir);
  return sd;
}

TEST(AttentionGuidance, TheUpdatesLowerTheirLossesOnTheTestUNet) {
  StableDiffusion& sd = pipeline();
  auto net = sd.denoiser();
  const std::string prompt = "a red coat and a blue bag";
  const auto words = sd.word_positions(prompt);
  const Cond c = sd.condition(prompt, "", 2, 16, 16);
  torch::manual_seed(3);
  const auto x = torch::randn({2, 4, 8, 8}) * 3;
  const double s = 3.0;
  EXPECT_EQ(error_of([&] { word_tokens(words, {"shoe"}, "attend-excite"); }),
            "--attend-excite: 'shoe' is not a word of the prompt (a, red, coat, and, a, blue, bag)");
  const auto subjects = word_tokens(words, {"coat", "bag"}, "attend-excite");
  const int64_t last = last_text_token(words);
  auto ae_loss = [&](const torch::Tensor& y) {
    torch::NoGradGuard ng;
    return attend_and_excite_loss(cross_attention_maps(*net, y, s, c), subjects, last, 8);
  };
  StateUpdate ae = attend_and_excite(net, subjects, last, {200, 0.5, 0}, 10);
  EXPECT_EQ(ae.steps, 5);
  const auto before = ae_loss(x), after = ae_loss(ae.fn(1, 10, s, x, c));
  EXPECT_LT(after.sum().item<double>(), before.sum().item<double>());

  const auto boxes = parse_layout("coat:0,0,0.5,0.5|bag:0.5,0.5,1,1");
  const auto toks = word_tokens(words, {"coat", "bag"}, "layout");
  auto lo_loss = [&](const torch::Tensor& y) {
    torch::NoGradGuard ng;
    return layout_loss(cross_attention_maps(*net, y, s, c), toks, boxes);
  };
  StateUpdate lo = layout_guidance(net, toks, boxes, {5, 0.2, 1, 0.0}, 10);
  EXPECT_EQ(lo.steps, 2);
  const auto e0 = lo_loss(x), e1 = lo_loss(lo.fn(0, 10, s, x, c));
  EXPECT_LT(e1.sum().item<double>(), e0.sum().item<double>());
  // chained: both, over the longer range
  StateUpdate both = chain(ae, lo);
  EXPECT_EQ(both.steps, 5);
}

TEST(AttentionGuidance, GenerateRunsUpdatedStepsOneAtATimeNumberedAsTheWhole) {
  StableDiffusion& sd = pipeline();
  auto net = sd.denoiser();
  const Cond c = sd.condition("a red coat", "", 1, 16, 16);
  const auto sigmas = make_schedule("karras", net->process(), 6);
  torch::manual_seed(4);
  const auto noise = torch::randn({1, 4, 8, 8});
  std::vector<std::pair<int, int>> seen;
  ScopedHook watch(net->network().hooks(), "temb", [&](const std::string&, const torch::Tensor& v, const HookContext& k) {
    seen.emplace_back(k.step, k.steps);
    return v;
  });
  torch::NoGradGuard ng;
  GenerateOptions plain;
  const auto a = generate(*net, find_sampler("euler"), sigmas, noise, c, plain).x;
  seen.clear();
  GenerateOptions same = plain;
  int calls = 0;
  same.update = [&](int step, int steps, double s, const torch::Tensor& x, const Cond&) {
    EXPECT_EQ(steps, 6);
    EXPECT_DOUBLE_EQ(s, sigmas[size_t(step)]);
    ++calls;
    return x;
  };
  same.update_steps = 3;
  const auto b = generate(*net, find_sampler("euler"), sigmas, noise, c, same).x;
  EXPECT_EQ(calls, 3);
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-5);  // a one-step sampler: nothing changes
  ASSERT_EQ(seen.size(), 6u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(seen[size_t(i)], std::make_pair(i, 6));
}

TEST(AttentionGuidanceCLI, GenerateTakesWordsAndBoxes) {
  static const std::string dir = tweedie::testing::tiny_sd_folder("attention_guidance_cli", 44);
  const std::string out = ::testing::TempDir() + "/ae.png";
  const std::string base = "generate -m " + dir + " -p \"a red coat and a blue bag\" -s 4 -W 16 -H 16 -q -o " + out;
  auto r = tweedie::testing::cli(base + " --attend-excite coat,bag --layout \"coat:0,0,0.5,1|bag:0.5,0,1,1\"");
  ASSERT_EQ(r.code, 0) << r.out;
  tweedie::testing::expect_error(base + " --attend-excite shoe", "--attend-excite: 'shoe' is not a word of the prompt");
  tweedie::testing::expect_error(base + " --layout coat:0,0,2,1", "--layout: the box of 'coat' must satisfy");
  tweedie::testing::expect_error("sample --layout coat:0,0,1,1 -n 1 -o " + out, "unknown option '--layout'");
  // the bench's own checks, before any model is loaded
  tweedie::testing::expect_error("bench canvas-attention -n 1", "tweedie bench canvas-attention: -n must be >= 2");
  tweedie::testing::expect_error("bench canvas-attention -o /nonexistent/dir",
                                 "tweedie bench canvas-attention: output directory '/nonexistent/dir' does not exist");
}

}  // namespace
