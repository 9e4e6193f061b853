// FashionCanvas rendering, layouts and captions (train/fashion_canvas.h).
#include "tweedie/train/fashion_canvas.h"

#include <algorithm>
#include <cctype>

#include "../core/splitmix.h"
#include "tweedie/core/error.h"

namespace tweedie {

using detail::splitmix64;
using detail::uniform_below;

const std::vector<CanvasColour>& canvas_palette() {
  static const std::vector<CanvasColour> p{{"red", 255, 48, 48},     {"orange", 255, 150, 30},
                                           {"yellow", 250, 230, 40}, {"green", 50, 210, 70},
                                           {"cyan", 40, 220, 230},   {"blue", 60, 100, 255},
                                           {"magenta", 230, 60, 230}, {"white", 245, 245, 245}};
  return p;
}

const std::vector<std::string>& canvas_item_names() {
  static const std::vector<std::string> n{"t-shirt", "trouser", "pullover", "dress", "coat",
                                          "sandal",  "shirt",   "sneaker",  "bag",   "ankle boot"};
  return n;
}

const std::vector<std::string>& canvas_cell_names() {
  static const std::vector<std::string> n{"top left", "top right", "bottom left", "bottom right"};
  return n;
}

bool canvas_held_out(int colour, int item) {
  // green bag, orange sneaker, white dress, magenta coat
  return (colour == 3 && item == 8) || (colour == 1 && item == 7) || (colour == 7 && item == 3) ||
         (colour == 6 && item == 4);
}

bool CanvasLayout::has_held_out() const {
  for (auto& it : items)
    if (canvas_held_out(it.colour, it.item)) return true;
  return false;
}

const CanvasItem* CanvasLayout::at(int cell) const {
  for (auto& it : items)
    if (it.cell == cell) return &it;
  return nullptr;
}

namespace {

std::string phrase(const CanvasItem& it, bool colour, bool cell) {
  std::string s = "a ";
  if (colour) s += canvas_palette()[size_t(it.colour)].name + " ";
  s += canvas_item_names()[size_t(it.item)];
  if (cell) s += " at the " + canvas_cell_names()[size_t(it.cell)];
  return s;
}

std::string join(const std::vector<std::string>& parts) {
  std::string s;
  for (size_t i = 0; i < parts.size(); ++i) s += (i ? " and " : "") + parts[i];
  return s;
}

// The state for canvas `index` of `seed` (and a stream tag, so layout, items
// and caption draws are independent).
uint64_t stream(uint64_t seed, int64_t index, uint64_t tag) {
  uint64_t s = seed ^ 0x46617368436e7673ull;  // "FashCnvs"
  uint64_t a = splitmix64(s);
  uint64_t b = a ^ (uint64_t(index) * 0xD1B54A32D192ED03ull) ^ (tag * 0x8CB92BA72F3D8DD7ull);
  splitmix64(b);
  return b;
}

std::string trimmed_lower(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  std::string r = s.substr(a, b - a);
  for (auto& ch : r) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return r;
}

}  // namespace

std::string canonical_caption(const CanvasLayout& l) {
  std::vector<std::string> parts;
  for (auto& it : l.items) parts.push_back(phrase(it, true, true));
  return join(parts);
}

CanvasLayout parse_canonical_caption(const std::string& caption) {
  const std::string text = trimmed_lower(caption);
  check(!text.empty(), "FashionCanvas caption: empty");
  std::vector<std::string> parts;
  for (size_t pos = 0;;) {
    size_t k = text.find(" and ", pos);
    parts.push_back(text.substr(pos, k == std::string::npos ? std::string::npos : k - pos));
    if (k == std::string::npos) break;
    pos = k + 5;
  }
  check(parts.size() <= 4, "FashionCanvas caption '", caption, "': ", parts.size(), " phrases, at most 4 (one per cell)");
  CanvasLayout l;
  for (auto& p : parts) {
    bool ok = false;
    for (int c = 0; c < 8 && !ok; ++c)
      for (int i = 0; i < 10 && !ok; ++i)
        for (int cell = 0; cell < 4 && !ok; ++cell)
          if (p == phrase({cell, i, c}, true, true)) {
            check(l.items.empty() || cell > l.items.back().cell, "FashionCanvas caption '", caption, "': phrase '", p,
                  "' is out of reading order or repeats a cell (top left, top right, bottom left, bottom right)");
            l.items.push_back({cell, i, c});
            ok = true;
          }
    check(ok, "FashionCanvas caption '", caption, "': '", p,
          "' is not a phrase 'a COLOUR ITEM at the CELL' (colours: red, orange, yellow, green, cyan, blue, magenta, "
          "white; items: t-shirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot; cells: top "
          "left, top right, bottom left, bottom right)");
  }
  return l;
}

CanvasLayout random_canvas_layout(uint64_t& state, bool train) {
  const int n = 1 + int(uniform_below(state, 4));
  int cells[4] = {0, 1, 2, 3};
  for (int i = 3; i > 0; --i) std::swap(cells[i], cells[uniform_below(state, uint64_t(i) + 1)]);
  std::sort(cells, cells + n);
  CanvasLayout l;
  for (int k = 0; k < n; ++k) {
    int item, colour;
    do {
      item = int(uniform_below(state, 10));
      colour = int(uniform_below(state, 8));
    } while (train && canvas_held_out(colour, item));
    l.items.push_back({cells[k], item, colour});
  }
  return l;
}

std::string vary_caption(const CanvasLayout& l, uint64_t& state) {
  if (uniform_below(state, 2) == 0) return canonical_caption(l);
  std::vector<std::string> parts;
  for (auto& it : l.items) {
    const bool colour = uniform_below(state, 4) != 0, cell = uniform_below(state, 4) != 0;
    parts.push_back(phrase(it, colour, cell));
  }
  if (uniform_below(state, 2) == 0)
    for (size_t i = parts.size(); i > 1; --i) std::swap(parts[i - 1], parts[uniform_below(state, i)]);
  return join(parts);
}

FashionCanvas::FashionCanvas(const std::string& split, const std::string& dir)
    : FashionCanvas(load_fashion_mnist(split, dir), split == "train") {}

FashionCanvas::FashionCanvas(Dataset items, bool train) : items_(std::move(items)), train_(train) {
  check(items_.labelled() && items_.channels() == 1 && items_.height() == 28 && items_.width() == 28,
        "FashionCanvas: items must be labelled 28x28 grayscale images (", items_.source, ")");
  by_class_.assign(10, {});
  auto lab = items_.labels.contiguous();
  const int64_t* p = lab.data_ptr<int64_t>();
  for (int64_t i = 0; i < items_.size(); ++i) {
    check(p[i] >= 0 && p[i] < 10, "FashionCanvas: label ", p[i], " of image ", i, " is not a Fashion-MNIST class");
    by_class_[size_t(p[i])].push_back(i);
  }
  for (int c = 0; c < 10; ++c)
    check(!by_class_[size_t(c)].empty(), "FashionCanvas: no image of class ", canvas_item_names()[size_t(c)], " in ",
          items_.source);
}

std::vector<int64_t> FashionCanvas::pick_sources(const CanvasLayout& l, uint64_t seed, int64_t index) const {
  uint64_t st = stream(seed, index, 2);
  std::vector<int64_t> src;
  for (auto& it : l.items) {
    const auto& pool = by_class_[size_t(it.item)];
    src.push_back(pool[size_t(uniform_below(st, pool.size()))]);
  }
  return src;
}

FashionCanvas::Sample FashionCanvas::sample(uint64_t seed, int64_t index, bool vary) const {
  Sample s;
  uint64_t st = stream(seed, index, 1);
  s.layout = random_canvas_layout(st, train_);
  s.sources = pick_sources(s.layout, seed, index);
  uint64_t cs = stream(seed, index, 3);
  s.caption = vary ? vary_caption(s.layout, cs) : canonical_caption(s.layout);
  return s;
}

torch::Tensor FashionCanvas::render(const CanvasLayout& l, const std::vector<int64_t>& sources) const {
  check(sources.size() == l.items.size(), "FashionCanvas: ", sources.size(), " source images for ", l.items.size(),
        " items");
  auto out = torch::zeros({3, 64, 64}, torch::kUInt8);
  auto o = out.accessor<uint8_t, 3>();
  for (size_t k = 0; k < l.items.size(); ++k) {
    const auto& it = l.items[k];
    check(it.cell >= 0 && it.cell < 4 && it.item >= 0 && it.item < 10 && it.colour >= 0 && it.colour < 8,
          "FashionCanvas: item out of range");
    check(sources[k] >= 0 && sources[k] < items_.size(), "FashionCanvas: source image ", sources[k], " out of range");
    auto g = items_.images[sources[k]][0].contiguous();
    auto ga = g.accessor<uint8_t, 2>();
    const auto& c = canvas_palette()[size_t(it.colour)];
    const int rgb[3] = {c.r, c.g, c.b};
    const int r0 = (it.cell / 2) * 32 + 2, c0 = (it.cell % 2) * 32 + 2;
    for (int y = 0; y < 28; ++y)
      for (int x = 0; x < 28; ++x)
        for (int ch = 0; ch < 3; ++ch)  // round(g * c / 255), halves up (g * c >= 0)
          o[ch][r0 + y][c0 + x] = uint8_t((2 * int(ga[y][x]) * rgb[ch] + 255) / 510);
  }
  return out;
}

std::pair<torch::Tensor, std::vector<std::string>> FashionCanvas::batch(uint64_t seed, int64_t first, int64_t n,
                                                                        bool vary) const {
  check(n >= 1, "FashionCanvas: batch of ", n);
  auto imgs = torch::empty({n, 3, 64, 64}, torch::kUInt8);
  std::vector<std::string> caps;
  for (int64_t i = 0; i < n; ++i) {
    auto s = sample(seed, first + i, vary);
    imgs[i].copy_(render(s.layout, s.sources));
    caps.push_back(std::move(s.caption));
  }
  return {imgs, caps};
}

}  // namespace tweedie
