// FashionCanvas judging (include/tweedie/eval/canvas_judge.h).
#include "tweedie/eval/canvas_judge.h"

#include <algorithm>
#include <cmath>

#include "../core/splitmix.h"
#include "tweedie/core/error.h"

namespace tweedie {

namespace {
constexpr int64_t kCell = 32, kWindow = 28, kOffset = 2, kBright = 64, kMinPixels = 10;
}

torch::Tensor canvas_bytes(const torch::Tensor& images) {
  check(images.dim() == 4 && images.size(1) == 3 && images.size(2) == 64 && images.size(3) == 64,
        "FashionCanvas judge: images must be [N, 3, 64, 64], got ", images.sizes());
  if (images.scalar_type() == torch::kUInt8) return images.contiguous();
  check(torch::isfinite(images).all().item<bool>(), "FashionCanvas judge: the images contain NaN or infinity");
  return ((images.to(torch::kFloat32) + 1) * 127.5).round().clamp(0, 255).to(torch::kUInt8).contiguous();
}

torch::Tensor canvas_cell_present(const torch::Tensor& images) {
  // [N, 3, 2, 32, 2, 32] -> bright pixel count per cell
  auto bright = (std::get<0>(images.max(1)) >= kBright).view({images.size(0), 2, kCell, 2, kCell});
  return bright.sum({2, 4}).view({images.size(0), 4}) >= kMinPixels;
}

torch::Tensor canvas_windows(const torch::Tensor& images) {
  std::vector<torch::Tensor> w;
  for (int cell = 0; cell < 4; ++cell) {
    const int64_t r = (cell / 2) * kCell + kOffset, c = (cell % 2) * kCell + kOffset;
    w.push_back(images.narrow(2, r, kWindow).narrow(3, c, kWindow));
  }
  return torch::stack(w, 1).contiguous();
}

torch::Tensor detint_windows(const torch::Tensor& windows) {
  auto g = std::get<0>(windows.max(2)).to(torch::kFloat32);          // [N, 4, 28, 28]
  auto peak = g.amax({2, 3}, true).clamp_min(1);                      // all-black windows stay black
  return (g * (255.0 / peak)).round().clamp(0, 255).to(torch::kUInt8);
}

torch::Tensor window_colours(const torch::Tensor& windows) {
  auto w = windows.to(torch::kFloat32);                               // [N, 4, 3, 28, 28]
  auto bright = (std::get<0>(w.max(2, true)) >= kBright).to(torch::kFloat32);  // [N, 4, 1, 28, 28]
  auto count = bright.sum({2, 3, 4});                                 // [N, 4]
  auto sum = (w * bright).sum({3, 4});                                // [N, 4, 3]
  return sum / (255.0 * count.clamp_min(1)).unsqueeze(2);
}

int nearest_palette_colour(double r, double g, double b) {
  const double n = std::sqrt(r * r + g * g + b * b);
  if (!(n > 0)) return -1;
  int best = -1;
  double best_cos = -2;
  const auto& pal = canvas_palette();
  for (size_t k = 0; k < pal.size(); ++k) {
    const double pr = pal[k].r, pg = pal[k].g, pb = pal[k].b;
    const double cos = (r * pr + g * pg + b * pb) / (n * std::sqrt(pr * pr + pg * pg + pb * pb));
    if (cos > best_cos) best_cos = cos, best = int(k);
  }
  return best;
}

CanvasJudge::CanvasJudge(std::shared_ptr<Classifier> classifier, int64_t batch)
    : clf_(std::move(classifier)), batch_(batch) {
  check(clf_ != nullptr, "FashionCanvas judge: no classifier");
  check(batch_ >= 1, "FashionCanvas judge: batch must be >= 1");
  auto shape = clf_->sample_shape();
  check(shape == std::vector<int64_t>{1, kWindow, kWindow}, "FashionCanvas judge: the classifier must take [1, 28, 28] "
        "images (a Fashion-MNIST classifier), it takes ", c10::IntArrayRef(shape));
  clf_->eval();
}

std::pair<std::vector<CanvasVerdict>, torch::Tensor> CanvasJudge::judge_and_features(const torch::Tensor& images) const {
  auto bytes = canvas_bytes(images);
  const int64_t n = bytes.size(0);
  std::vector<CanvasVerdict> out(static_cast<size_t>(n));
  std::vector<torch::Tensor> feats;
  torch::NoGradGuard ng;
  for (int64_t i = 0; i < n; i += batch_) {
    auto x = bytes.narrow(0, i, std::min(batch_, n - i));
    const int64_t m = x.size(0);
    auto present = canvas_cell_present(x);
    auto win = canvas_windows(x);
    auto gray = detint_windows(win).view({m * 4, 1, kWindow, kWindow}).to(torch::kFloat32) / 127.5 - 1;
    auto f = clf_->features(gray);
    auto cls = clf_->logits(f).argmax(1).view({m, 4});
    auto col = window_colours(win);
    feats.push_back(torch::cat({f.view({m, 4, -1}), col}, 2).view({m, -1}));
    auto pa = present.accessor<bool, 2>();
    auto ca = cls.accessor<int64_t, 2>();
    auto ka = col.accessor<float, 3>();
    for (int64_t j = 0; j < m; ++j)
      for (int cell = 0; cell < 4; ++cell) {
        CellVerdict& v = out[size_t(i + j)][size_t(cell)];
        v.present = pa[j][cell];
        if (!v.present) continue;
        v.item = int(ca[j][cell]);
        v.colour = nearest_palette_colour(ka[j][cell][0], ka[j][cell][1], ka[j][cell][2]);
      }
  }
  return {std::move(out), torch::cat(feats)};
}

std::vector<CanvasVerdict> CanvasJudge::judge(const torch::Tensor& images) const { return judge_and_features(images).first; }
torch::Tensor CanvasJudge::features(const torch::Tensor& images) const { return judge_and_features(images).second; }

bool canvas_correct(const CanvasLayout& caption, const CanvasVerdict& v) {
  for (int cell = 0; cell < 4; ++cell) {
    const CanvasItem* it = caption.at(cell);
    const CellVerdict& c = v[size_t(cell)];
    if (!it) {
      if (c.present) return false;
    } else if (!c.present || c.item != it->item || c.colour != it->colour) {
      return false;
    }
  }
  return true;
}

CanvasScore score_canvases(const std::vector<CanvasLayout>& captions, const std::vector<CanvasVerdict>& verdicts) {
  check(captions.size() == verdicts.size(), "FashionCanvas score: ", captions.size(), " captions for ", verdicts.size(),
        " images");
  CanvasScore s;
  for (size_t i = 0; i < captions.size(); ++i) {
    const CanvasLayout& l = captions[i];
    const size_t k = l.items.size();
    check(k >= 1 && k <= 4, "FashionCanvas score: caption ", i, " names ", k, " items");
    const bool ok = canvas_correct(l, verdicts[i]);
    for (CanvasTally* t : {&s.all, l.has_held_out() ? &s.held_out : &s.seen, &s.by_count[k - 1]}) {
      ++t->images;
      t->correct += ok;
    }
    for (int cell = 0; cell < 4; ++cell) {
      const CellVerdict& c = verdicts[i][size_t(cell)];
      if (const CanvasItem* it = l.at(cell)) {
        ++s.named;
        s.present += c.present;
        s.item += c.present && c.item == it->item;
        s.colour += c.present && c.colour == it->colour;
      } else {
        ++s.unnamed;
        s.empty += !c.present;
      }
    }
  }
  return s;
}

std::vector<std::vector<int64_t>> canvas_item_words(const CanvasLayout& l) {
  std::vector<std::vector<int64_t>> out;
  int64_t w = 0;
  for (size_t k = 0; k < l.items.size(); ++k) {
    if (k) ++w;  // "and"
    w += 2;      // "a", colour
    const std::string& name = canvas_item_names()[size_t(l.items[k].item)];
    const int64_t words = 1 + int64_t(std::count(name.begin(), name.end(), ' '));
    out.emplace_back();
    for (int64_t i = 0; i < words; ++i) out.back().push_back(w++);
    w += 4;  // "at", "the", two cell words
  }
  return out;
}

std::array<double, 4> canvas_cell_box(int cell) {
  check(cell >= 0 && cell < 4, "FashionCanvas: cell ", cell, " is not 0..3");
  const double top = (cell / 2) * 0.5, left = (cell % 2) * 0.5;
  return {top, left, top + 0.5, left + 0.5};
}

std::vector<CanvasLayout> canvas_prompt_set(int64_t n, uint64_t seed) {
  check(n >= 1, "FashionCanvas prompt set: n must be >= 1");
  static const int held[4][2] = {{3, 8}, {1, 7}, {7, 3}, {6, 4}};  // (colour, item): green bag, orange sneaker, white dress, magenta coat
  std::vector<CanvasLayout> out;
  uint64_t st = seed ^ 0x50726f6d70747321ull;  // "Prompts!"
  for (int64_t i = 0; i < n; ++i) {
    const int64_t count = i % 4 + 1;
    const bool with_held_out = (i / 4) % 2 == 1;
    CanvasLayout l;
    do l = random_canvas_layout(st, /*train=*/true);  // all pairs seen ...
    while (int64_t(l.items.size()) != count);
    if (with_held_out) {  // ... then exactly one becomes a held-out pair
      auto& it = l.items[detail::uniform_below(st, uint64_t(count))];
      const int h = int(detail::uniform_below(st, 4));
      it.colour = held[h][0];
      it.item = held[h][1];
    }
    out.push_back(std::move(l));
  }
  return out;
}

}  // namespace tweedie
