// FashionCanvas judging (eval/canvas_judge.h) against SPEC's rules: the
// empty-cell threshold, de-tinting, nearest palette colour by cosine, scoring,
// the seeded prompt set, and real test canvases judged with the shipped
// classifier (presence and colour exact, class as the classifier's accuracy).
#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/eval/canvas_judge.h"
#include "tweedie/models/network_io.h"

using namespace tweedie;
using tweedie::testing::error_of;

namespace {

torch::Tensor blank(int64_t n = 1) { return torch::zeros({n, 3, 64, 64}, torch::kUInt8); }

CanvasJudge shipped_judge() {
  const std::string path = tweedie::testing::source_path("models/fashion_mnist_classifier.safetensors");
  return CanvasJudge(as_classifier(load_network(path), path));
}

}  // namespace

TEST(CanvasJudge, EmptyCellIsFewerThanTenPixelsWithALargestChannelOf64) {
  auto img = blank();
  // top right: 9 pixels at 64 in one channel -> still empty
  for (int k = 0; k < 9; ++k) img[0][k % 3][5][40 + k] = 64;
  // bottom left: 10 pixels at 64 -> present
  for (int k = 0; k < 10; ++k) img[0][2][40][k] = 64;
  // bottom right: 500 pixels at 63 -> empty
  img[0].narrow(1, 33, 20).narrow(2, 33, 25).fill_(63);
  // top left: 10 pixels at 64, on the cell's edge (outside the 28x28 window) -> present
  for (int k = 0; k < 10; ++k) img[0][0][0][k] = 64;
  auto p = canvas_cell_present(img);
  EXPECT_TRUE(p[0][0].item<bool>());
  EXPECT_FALSE(p[0][1].item<bool>());
  EXPECT_TRUE(p[0][2].item<bool>());
  EXPECT_FALSE(p[0][3].item<bool>());
}

TEST(CanvasJudge, WindowsSitAtCellPlusTwoAndDetintScalesTheChannelMaximumTo255) {
  auto img = blank();
  img[0][1][32 + 2][32 + 2] = 100;  // bottom right window's (0, 0), green
  img[0][0][32 + 2 + 27][32 + 2 + 27] = 50;  // its (27, 27), red
  img[0][2][31][31] = 200;  // top left cell, outside its window
  auto w = canvas_windows(img);
  ASSERT_EQ(w.sizes(), (std::vector<int64_t>{1, 4, 3, 28, 28}));
  EXPECT_EQ(w[0][3][1][0][0].item<int>(), 100);
  EXPECT_EQ(w[0][3][0][27][27].item<int>(), 50);
  EXPECT_EQ(w[0][0].sum().item<int>(), 0);
  auto g = detint_windows(w);
  EXPECT_EQ(g[0][3][0][0].item<int>(), 255);
  EXPECT_EQ(g[0][3][27][27].item<int>(), 128);  // round(50 * 255 / 100) = 127.5 -> 128
  EXPECT_EQ(g[0][0].sum().item<int>(), 0);      // a black window stays black
}

TEST(CanvasJudge, ColourIsThePaletteEntryClosestInDirection) {
  const auto& pal = canvas_palette();
  for (size_t k = 0; k < pal.size(); ++k) {
    EXPECT_EQ(nearest_palette_colour(pal[k].r, pal[k].g, pal[k].b), int(k));
    EXPECT_EQ(nearest_palette_colour(0.3 * pal[k].r, 0.3 * pal[k].g, 0.3 * pal[k].b), int(k));  // scale-free
  }
  EXPECT_EQ(nearest_palette_colour(0, 0, 0), -1);
  EXPECT_EQ(nearest_palette_colour(200, 200, 190), 7);  // near-grey: white
  // The window's mean over bright pixels only: a dim orange fringe does not move a blue item.
  auto img = blank();
  img[0].narrow(1, 2, 10).narrow(2, 2, 10).select(0, 2).fill_(255);  // blue channel
  img[0].narrow(1, 2, 10).narrow(2, 2, 10).select(0, 1).fill_(100);
  img[0].narrow(1, 2, 10).narrow(2, 2, 10).select(0, 0).fill_(60);
  img[0].narrow(1, 20, 5).narrow(2, 2, 20).select(0, 0).fill_(63);  // below the threshold
  auto c = window_colours(canvas_windows(img));
  EXPECT_NEAR(c[0][0][0].item<float>(), 60 / 255.0, 1e-6);
  EXPECT_NEAR(c[0][0][2].item<float>(), 1.0, 1e-6);
  EXPECT_EQ(c[0][1].abs().sum().item<float>(), 0);
}

TEST(CanvasJudge, FloatImagesAreQuantizedAsAPngWouldStoreThem) {
  auto bytes = torch::randint(0, 256, {2, 3, 64, 64}, torch::kInt64).to(torch::kUInt8);
  auto x = bytes.to(torch::kFloat32) / 127.5 - 1;
  EXPECT_TRUE(torch::equal(canvas_bytes(x), bytes));
  EXPECT_NE(error_of([&] { canvas_bytes(torch::zeros({1, 3, 32, 32})); }).find("[N, 3, 64, 64]"), std::string::npos);
  auto bad = x.clone();
  bad[0][0][0][0] = std::nan("");
  EXPECT_NE(error_of([&] { canvas_bytes(bad); }).find("NaN"), std::string::npos);
}

TEST(CanvasJudge, ScoringCountsImagesAttributesCountsAndHeldOutPairs) {
  CanvasLayout a{{{0, 7, 0}}};                      // a red sneaker at the top left
  CanvasLayout b{{{1, 8, 3}, {2, 3, 5}}};           // a green bag (held out) ..., a blue dress ...
  CanvasVerdict va{}, vb{};
  va[0] = {true, 7, 0};                             // a: correct
  vb[1] = {true, 8, 3};
  vb[2] = {true, 3, 4};                             // b: wrong colour
  vb[3] = {true, 0, 0};                             // and an unnamed cell not empty
  auto s = score_canvases({a, b}, {va, vb});
  EXPECT_EQ(s.all.images, 2);
  EXPECT_EQ(s.all.correct, 1);
  EXPECT_EQ(s.seen.correct, 1);
  EXPECT_EQ(s.held_out.images, 1);
  EXPECT_EQ(s.held_out.correct, 0);
  EXPECT_EQ(s.by_count[0].correct, 1);
  EXPECT_EQ(s.by_count[1].images, 1);
  EXPECT_EQ(s.named, 3);
  EXPECT_EQ(s.present, 3);
  EXPECT_EQ(s.item, 3);
  EXPECT_EQ(s.colour, 2);
  EXPECT_EQ(s.unnamed, 5);
  EXPECT_EQ(s.empty, 4);
  EXPECT_DOUBLE_EQ(s.empty_accuracy(), 0.8);
  EXPECT_TRUE(canvas_correct(a, va));
  EXPECT_FALSE(canvas_correct(a, vb));
  EXPECT_NE(error_of([&] { score_canvases({a}, {}); }).find("1 captions for 0 images"), std::string::npos);
}

TEST(CanvasJudge, PromptSetCyclesItemCountsAndAlternatesHeldOutGroups) {
  auto p = canvas_prompt_set(64, 3);
  ASSERT_EQ(p.size(), 64u);
  std::set<std::string> distinct;
  for (size_t i = 0; i < p.size(); ++i) {
    EXPECT_EQ(p[i].items.size(), i % 4 + 1);
    int held = 0;
    for (auto& it : p[i].items) held += canvas_held_out(it.colour, it.item);
    EXPECT_EQ(held, (i / 4) % 2 == 1 ? 1 : 0) << i;
    const std::string c = canonical_caption(p[i]);
    EXPECT_EQ(canonical_caption(parse_canonical_caption(c)), c);
    distinct.insert(c);
  }
  EXPECT_GT(distinct.size(), 60u);
  auto q = canvas_prompt_set(64, 3), r = canvas_prompt_set(64, 4);
  EXPECT_EQ(canonical_caption(q[17]), canonical_caption(p[17]));
  int same = 0;
  for (size_t i = 0; i < p.size(); ++i) same += canonical_caption(r[i]) == canonical_caption(p[i]);
  EXPECT_LT(same, 8);
}

TEST(CanvasJudge, RealTestCanvasesJudgeCorrectUpToTheClassifiersAccuracy) {
  const FashionCanvas test("test");
  const auto layouts = canvas_prompt_set(96, 11);
  std::vector<torch::Tensor> imgs;
  for (size_t i = 0; i < layouts.size(); ++i)
    imgs.push_back(test.render(layouts[i], test.pick_sources(layouts[i], 11, int64_t(i))));
  auto images = torch::stack(imgs);
  CanvasJudge judge = shipped_judge();
  auto [verdicts, feats] = judge.judge_and_features(images);
  auto s = score_canvases(layouts, verdicts);
  EXPECT_EQ(s.present, s.named);  // every rendered item is present, in its colour
  EXPECT_EQ(s.colour, s.named);
  EXPECT_EQ(s.empty, s.unnamed);
  EXPECT_GT(s.class_accuracy(), 0.85);  // the classifier's test accuracy is about 0.92
  EXPECT_GT(s.all.accuracy(), 0.6);
  EXPECT_EQ(feats.sizes(), (std::vector<int64_t>{96, 4 * (128 + 3)}));
  // The same images as floats in [-1, 1] judge the same.
  auto again = judge.judge(images.to(torch::kFloat32) / 127.5 - 1);
  for (size_t i = 0; i < verdicts.size(); ++i)
    for (int c = 0; c < 4; ++c) EXPECT_EQ(again[i][size_t(c)].item, verdicts[i][size_t(c)].item);
}
