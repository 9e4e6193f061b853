// Images: 8-bit PNG read/write (gray, RGB, RGBA) with tEXt chunks, written
// atomically, and a small raster canvas for plots and grids.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

namespace tweedie {

struct Image {
  int width = 0, height = 0, channels = 3;  // 1 gray, 3 RGB, 4 RGBA
  std::vector<uint8_t> pixels;              // row-major, interleaved
  std::map<std::string, std::string> text;  // tEXt chunks (e.g. "parameters")
  Image() = default;
  Image(int w, int h, int c, uint8_t fill = 0) : width(w), height(h), channels(c), pixels(size_t(w) * h * c, fill) {}
  uint8_t* at(int x, int y) { return &pixels[(size_t(y) * width + x) * channels]; }
};

void write_png(const std::string& path, const Image& img);  // atomic
Image read_png(const std::string& path);                    // throws Error naming the file

// [C, H, W] float tensor in [lo, hi] -> Image (C = 1 or 3); clamps.
Image tensor_to_image(const torch::Tensor& chw, double lo = -1, double hi = 1);
// Image -> [C, H, W] float32 in [lo, hi].
torch::Tensor image_to_tensor(const Image& img, double lo = -1, double hi = 1);
// Tile [N, C, H, W] into a grid with `cols` columns and a 2-pixel gap.
Image make_grid(const torch::Tensor& nchw, int cols, double lo = -1, double hi = 1);

}  // namespace tweedie
