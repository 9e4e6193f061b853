// FashionCanvas: the captioned image set of tweedie's default text-to-image
// model, exactly as ../shared/fashion-canvas/SPEC.md (docs/fashion-canvas.md)
// defines it.
//
//   image    64 x 64 RGB, black; a 2 x 2 grid of 32 x 32 cells (top left,
//            top right, bottom left, bottom right); a cell is empty or holds
//            one Fashion-MNIST item g (28 x 28, 0..255) with its top-left
//            pixel at (cell row + 2, cell column + 2), tinted by a palette
//            colour c: channel k = round(g * c_k / 255).
//   layout   1 to 4 items (each count equally likely), cells without
//            repetition, class and colour uniform; training layouts never
//            hold a held-out pair (green bag, orange sneaker, white dress,
//            magenta coat): a drawn (colour, class) pair that is held out is
//            drawn again, so the allowed pairs stay uniform. Test layouts
//            may hold any pair (they are the references of held-out prompts).
//   items    uniform over the split's images of the drawn class (train split
//            for training, test split for references).
//   caption  canonical: "a {colour} {item} at the {cell}" per item in reading
//            order, joined by " and ". Training captions (vary = true) keep
//            the canonical caption with probability 1/2; otherwise each
//            phrase drops its colour with probability 1/4 and its cell with
//            probability 1/4, and with probability 1/2 the phrases are
//            listed in a random order.
//
// Everything random is a pure function of (seed, index) through splitmix64,
// the same on every platform: canvas `index` of a seed is the same image and
// caption whenever it is drawn, so training resumes exactly from a count.
// Verified in tests/test_fashion_canvas.cpp (pixel values against the
// definition, captions, the held-out pairs never drawn in training, parsing).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "tweedie/train/dataset.h"

namespace tweedie {

struct CanvasColour {
  std::string name;
  int r, g, b;
};

const std::vector<CanvasColour>& canvas_palette();     // red, orange, yellow, green, cyan, blue, magenta, white
const std::vector<std::string>& canvas_item_names();  // t-shirt, trouser, ..., ankle boot (Fashion-MNIST labels 0-9)
const std::vector<std::string>& canvas_cell_names();  // top left, top right, bottom left, bottom right
// True for the four (colour, item) pairs training never shows.
bool canvas_held_out(int colour, int item);

struct CanvasItem {
  int cell = 0;    // 0..3, reading order
  int item = 0;    // Fashion-MNIST class 0..9
  int colour = 0;  // palette index 0..7
  bool operator==(const CanvasItem& o) const { return cell == o.cell && item == o.item && colour == o.colour; }
};

// A layout: items sorted by cell, at most one per cell, 1 to 4 of them.
struct CanvasLayout {
  std::vector<CanvasItem> items;
  bool has_held_out() const;
  // The item in a cell, or nullptr for an empty cell.
  const CanvasItem* at(int cell) const;
};

// The canonical caption of a layout.
std::string canonical_caption(const CanvasLayout& l);
// A canonical caption back to its layout: phrases "a COLOUR ITEM at the CELL"
// joined by " and ", in reading order, cells distinct (case and surrounding
// spaces are ignored). Error naming the phrase that is not one.
CanvasLayout parse_canonical_caption(const std::string& caption);

class FashionCanvas {
 public:
  // split "train" or "test" of Fashion-MNIST (dir "" = Debian's package).
  explicit FashionCanvas(const std::string& split = "train", const std::string& dir = "");
  // A training set of already loaded items (tests); held-out pairs are
  // excluded when `train`.
  FashionCanvas(Dataset items, bool train);

  bool train() const { return train_; }
  const Dataset& items() const { return items_; }

  // Canvas `index` of `seed`: its layout, the source images of its items
  // (indices into items(), in layout order) and its caption.
  struct Sample {
    CanvasLayout layout;
    std::vector<int64_t> sources;
    std::string caption;
  };
  Sample sample(uint64_t seed, int64_t index, bool vary_caption) const;
  // Random items of the layout's classes for canvas `index` of `seed` (a
  // reference canvas for a given caption).
  std::vector<int64_t> pick_sources(const CanvasLayout& l, uint64_t seed, int64_t index) const;
  // uint8 [3, 64, 64].
  torch::Tensor render(const CanvasLayout& l, const std::vector<int64_t>& sources) const;
  // Canvases first .. first + n - 1 of seed as uint8 [n, 3, 64, 64] and their captions.
  std::pair<torch::Tensor, std::vector<std::string>> batch(uint64_t seed, int64_t first, int64_t n,
                                                           bool vary_caption) const;

 private:
  Dataset items_;
  bool train_;
  std::vector<std::vector<int64_t>> by_class_;
};

// A training caption of a layout: the variations above, drawn from state.
std::string vary_caption(const CanvasLayout& l, uint64_t& state);
// A random layout (the distribution above) from state; held-out pairs excluded when `train`.
CanvasLayout random_canvas_layout(uint64_t& state, bool train);

}  // namespace tweedie
