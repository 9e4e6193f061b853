// Cross-attention share inside a region (eval/attention_share.h): the closed
// form on hand-made maps, read through a real SD UNet's attn2.probs sites,
// with CFG's unconditional rows skipped and the sampler step recorded; and
// FashionCanvas's item-word indices and cell boxes.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/eval/attention_share.h"
#include "tweedie/eval/canvas_judge.h"
#include "tweedie/models/network.h"

using namespace tweedie;
using tweedie::testing::error_of;

TEST(AttentionShare, ShareInsideIsTheBoxsFractionOfTheMass) {
  auto m = torch::ones({4, 4});
  EXPECT_DOUBLE_EQ(AttentionShare::share_inside(m, {0, 0, 0.5, 0.5}), 0.25);
  EXPECT_DOUBLE_EQ(AttentionShare::share_inside(m, {0, 0, 1, 1}), 1.0);
  m[0][0] = 13;  // 13 + 3 inside of 28
  EXPECT_DOUBLE_EQ(AttentionShare::share_inside(m, {0, 0, 0.5, 0.5}), 16.0 / 28.0);
  EXPECT_DOUBLE_EQ(AttentionShare::share_inside(torch::zeros({2, 2}), {0, 0, 0.5, 0.5}), 0.0);
}

TEST(AttentionShare, ReadsConditionalRowsOfEveryCrossAttentionLayerPerStep) {
  torch::manual_seed(0);
  auto net = make_network("sd", R"({"unet": {"height": 16, "width": 16, "model_channels": 16, "channel_mult": [1, 2],
      "num_res_blocks": 1, "attention_resolutions": [1, 2], "transformer_depth": [1, 1], "transformer_depth_middle": 1,
      "num_head_channels": 8, "context_dim": 32, "use_linear_in_transformer": true, "norm_groups": 8},
      "text_encoder": {"vocab_size": 1000, "width": 32, "layers": 1, "heads": 2, "intermediate": 64,
      "projection_dim": 0, "activation": "gelu"}})");
  net->eval();
  const int64_t n = 2, token = 3;
  // Replace every cross-attention map: token 3 of the conditional rows attends
  // only to the top-left quarter of the grid, of the unconditional rows only
  // to the bottom-right quarter.
  int calls = 0;
  ScopedHook fake(net->hooks(), "*attn2.probs", [&](const std::string&, const torch::Tensor& p, const HookContext& ctx) {
    ++calls;
    const int64_t rows = p.size(0), Lq = p.size(1), side = int64_t(std::lround(std::sqrt(double(Lq))));
    auto out = torch::full_like(p, 1.0 / double(p.size(2)));
    const int64_t heads = rows / (2 * n);
    for (int64_t r = 0; r < rows; ++r) {
      const bool cond = ctx.branch_of(r / heads) == "cond";
      auto g = torch::zeros({side, side});
      if (cond)
        g.narrow(0, 0, side / 2).narrow(1, 0, side / 2).fill_(1);
      else
        g.narrow(0, side / 2, side / 2).narrow(1, side / 2, side / 2).fill_(1);
      out[r].select(1, token).copy_(g.view({Lq}));
    }
    return out;
  });
  AttentionShare share(*net, 16, 16);
  share.set_targets({{0, {token}, {0, 0, 0.5, 0.5}}, {1, {token}, {0.5, 0.5, 1, 1}}}, n);
  {
    BranchScope branches({"cond", "uncond"});
    StepScope step(5);
    Cond c;
    c.context = torch::randn({2 * n, 77, 32});
    net->hooks().ctx = current_hook_context(1.0, 2 * n);  // as NetDenoiser does for each call
    torch::NoGradGuard ng;
    net->forward(torch::randn({2 * n, 4, 16, 16}), torch::full({2 * n}, 500.0), c);
  }
  ASSERT_GT(calls, 0);
  // Three transformer layers (down at 16x16 and 8x8, middle) and two up.
  EXPECT_EQ(share.tallies().size(), size_t(calls));
  for (auto& [layer, by_step] : share.tallies()) {
    EXPECT_EQ(layer.find(".probs"), std::string::npos);
    ASSERT_EQ(by_step.size(), 1u) << layer;
    ASSERT_EQ(by_step.begin()->first, 5) << layer;
    // Target 0 sees all its mass inside (1), target 1's box holds none of the conditional map (0).
    EXPECT_EQ(by_step.begin()->second.count, 2) << layer;
    EXPECT_DOUBLE_EQ(by_step.begin()->second.sum, 1.0) << layer;
  }
  EXPECT_NE(error_of([&] { share.set_targets({{2, {token}, {0, 0, 0.5, 0.5}}}, n); }).find("row 2 of 2"),
            std::string::npos);
  EXPECT_NE(error_of([&] { share.set_targets({{0, {token}, {0.5, 0, 0.5, 1}}}, n); }).find("box"), std::string::npos);
}

TEST(AttentionShare, CanvasItemWordsAndCellBoxes) {
  CanvasLayout l{{{0, 7, 0}, {1, 9, 5}, {3, 0, 7}}};
  // "a red sneaker at the top left and a blue ankle boot at the top right and a white t-shirt at the bottom right"
  const auto w = canvas_item_words(l);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0], (std::vector<int64_t>{2}));
  EXPECT_EQ(w[1], (std::vector<int64_t>{10, 11}));
  EXPECT_EQ(w[2], (std::vector<int64_t>{19}));
  std::vector<std::string> words;
  std::string c = canonical_caption(l), word;
  for (char ch : c + " ") {
    if (ch == ' ') words.push_back(word), word.clear();
    else word += ch;
  }
  EXPECT_EQ(words[2], "sneaker");
  EXPECT_EQ(words[10] + " " + words[11], "ankle boot");
  EXPECT_EQ(words[19], "t-shirt");
  EXPECT_EQ(canvas_cell_box(3), (std::array<double, 4>{0.5, 0.5, 1, 1}));
  EXPECT_EQ(canvas_cell_box(1), (std::array<double, 4>{0, 0.5, 0.5, 1}));
}
