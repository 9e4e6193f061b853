// Judging a FashionCanvas image against its canonical caption, exactly as
// ../shared/fashion-canvas/SPEC.md ("Judging a generated image") defines it
// (docs/fashion-canvas.md), with tweedie's Fashion-MNIST classifier
// (models/fashion_mnist_classifier.safetensors):
//
//   cell empty   fewer than 10 of the cell's 32 x 32 pixels have a largest
//                channel >= 64;
//   class        the classifier on the cell's 28 x 28 item window (at cell
//                row + 2, column + 2) with the tint removed: per pixel the
//                maximum over R, G, B, scaled so the window's maximum is 255
//                (rounded to 8 bits, as the classifier's training images);
//   colour       the palette colour whose RGB direction is closest (cosine)
//                to the mean RGB of the window's bright pixels (largest
//                channel >= 64); none when the window has no bright pixel;
//   image        correct when every named item is in its cell with its class
//                and colour and every unnamed cell is empty.
//
// Images are 8-bit: uint8 [N, 3, 64, 64], or float in [-1, 1] quantized as a
// PNG would store them (eval/evaluator.h's quantize_8bit).
//
// Per-attribute accuracies are over the caption's named items (presence,
// class, colour; an empty cell counts as a wrong class and colour) and over
// its unnamed cells (empty). Scores are broken down by item count and by
// whether the caption names a held-out pair.
//
// FID features of a canvas: per cell, in reading order, the classifier's
// feature vector of the de-tinted window followed by the mean RGB in [0, 1]
// of the window's bright pixels (zeros without one): 4 x (feature_dim + 3)
// values, so the distance sees items, their cells and their colours.
// Verified in tests/test_canvas_judge.cpp (rendered canvases judge correct,
// every rule's threshold, scoring against hand-made verdicts).
#pragma once
#include <array>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "tweedie/models/classifier.h"
#include "tweedie/train/fashion_canvas.h"

namespace tweedie {

struct CellVerdict {
  bool present = false;
  int item = -1;    // the classifier's class (-1 when empty)
  int colour = -1;  // palette index (-1 when empty or no bright pixel in the window)
};
using CanvasVerdict = std::array<CellVerdict, 4>;

// Rule-level pieces, for images already in uint8 [N, 3, 64, 64].
torch::Tensor canvas_cell_present(const torch::Tensor& images);  // bool [N, 4]
torch::Tensor canvas_windows(const torch::Tensor& images);       // uint8 [N, 4, 3, 28, 28]
torch::Tensor detint_windows(const torch::Tensor& windows);      // [N, 4, 3, 28, 28] -> uint8 [N, 4, 28, 28], max 255 (or all 0)
torch::Tensor window_colours(const torch::Tensor& windows);      // float [N, 4, 3]: mean RGB / 255 of bright pixels (0 if none)
int nearest_palette_colour(double r, double g, double b);        // by cosine; -1 for black

// Images as the judge reads them: uint8 [N, 3, 64, 64] from uint8, or float in [-1, 1].
torch::Tensor canvas_bytes(const torch::Tensor& images);

class CanvasJudge {
 public:
  explicit CanvasJudge(std::shared_ptr<Classifier> classifier, int64_t batch = 256);
  std::vector<CanvasVerdict> judge(const torch::Tensor& images) const;
  torch::Tensor features(const torch::Tensor& images) const;  // float [N, 4 * (feature_dim + 3)]
  // Both at once (one classifier pass).
  std::pair<std::vector<CanvasVerdict>, torch::Tensor> judge_and_features(const torch::Tensor& images) const;

 private:
  std::shared_ptr<Classifier> clf_;
  int64_t batch_;
};

bool canvas_correct(const CanvasLayout& caption, const CanvasVerdict& v);

struct CanvasTally {
  int64_t images = 0, correct = 0;
  double accuracy() const { return images ? double(correct) / double(images) : -1; }
};

struct CanvasScore {
  CanvasTally all, seen, held_out;   // held_out: captions naming a held-out pair
  std::array<CanvasTally, 4> by_count;  // captions with 1..4 items
  int64_t named = 0, present = 0, item = 0, colour = 0;  // over named items
  int64_t unnamed = 0, empty = 0;                         // over unnamed cells
  double presence_accuracy() const { return named ? double(present) / double(named) : -1; }
  double class_accuracy() const { return named ? double(item) / double(named) : -1; }
  double colour_accuracy() const { return named ? double(colour) / double(named) : -1; }
  double empty_accuracy() const { return unnamed ? double(empty) / double(unnamed) : -1; }
};

CanvasScore score_canvases(const std::vector<CanvasLayout>& captions, const std::vector<CanvasVerdict>& verdicts);

// For each item of a layout, in order, the indices of its item name's words
// ("sneaker"; "ankle", "boot") among the space-separated words of its
// canonical caption: the words whose cross-attention belongs in its cell.
std::vector<std::vector<int64_t>> canvas_item_words(const CanvasLayout& l);
// A cell as a box of image fractions {top, left, bottom, right}.
std::array<double, 4> canvas_cell_box(int cell);

// The seeded prompt set of `tweedie eval` on text models: n canonical
// layouts with 1, 2, 3, 4 items in turn (i % 4 + 1), cells, classes and
// colours drawn as for training (no held-out pair); in every second group
// of four, one item (chosen uniformly) becomes a held-out pair (chosen
// uniformly), so seen and held-out prompts are measured on equal numbers.
std::vector<CanvasLayout> canvas_prompt_set(int64_t n, uint64_t seed);

}  // namespace tweedie
