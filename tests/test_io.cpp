// .npy and PNG round trips, malformed files rejected, atomic writes.
#include <gtest/gtest.h>

#include <unistd.h>

#include <fstream>

#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/io/npy.h"
#include "tweedie/io/plot.h"
#include "tweedie/io/resize.h"

using namespace tweedie;
using tweedie::testing::error_of;

namespace {

std::string tmp(const std::string& n) { return ::testing::TempDir() + "/io_" + n; }

TEST(Npy, RoundTripAndHeaderLayout) {
  auto t = torch::randn({3, 4, 5});
  save_npy(tmp("a.npy"), t);
  EXPECT_TRUE(torch::equal(load_npy(tmp("a.npy")), t));
  std::string bytes = read_file(tmp("a.npy"));
  EXPECT_EQ(bytes.substr(0, 6), "\x93NUMPY");
  EXPECT_EQ((10 + (unsigned char)bytes[8]) % 64, 0u);  // data 64-byte aligned as the format requires
  EXPECT_NE(bytes.find("'shape': (3,4,5)"), std::string::npos);
  save_npy(tmp("b.npy"), torch::arange(4, torch::kInt64));
  EXPECT_TRUE(torch::equal(load_npy(tmp("b.npy")), torch::arange(4, torch::kInt64)));
  save_npy(tmp("c.npy"), torch::zeros({7}));
  EXPECT_NE(read_file(tmp("c.npy")).find("'shape': (7,)"), std::string::npos);
}

TEST(Npy, Float64AndFortranOrderAreRead) {
  // Hand-written header: float64, Fortran order, shape (2, 3).
  std::string h = "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }";
  h += std::string(64 - (10 + h.size() + 1) % 64, ' ') + "\n";
  std::string b = std::string("\x93NUMPY\x01\x00", 8) + char(h.size()) + char(0) + h;
  double vals[6] = {1, 4, 2, 5, 3, 6};  // column-major of [[1,2,3],[4,5,6]]
  b.append(reinterpret_cast<char*>(vals), sizeof vals);
  write_file_atomic(tmp("f.npy"), b);
  auto t = load_npy(tmp("f.npy"));
  EXPECT_TRUE(torch::equal(t, torch::tensor({1., 2., 3., 4., 5., 6.}, torch::kFloat64).reshape({2, 3})));
}

TEST(Npy, MalformedFilesNameTheProblem) {
  write_file_atomic(tmp("bad1.npy"), "hello");
  EXPECT_NE(error_of([] { load_npy(tmp("bad1.npy")); }).find("bad magic"), std::string::npos);
  auto t = torch::randn({4, 4});
  save_npy(tmp("trunc.npy"), t);
  std::string b = read_file(tmp("trunc.npy"));
  write_file_atomic(tmp("trunc.npy"), b.substr(0, b.size() - 5));
  EXPECT_NE(error_of([] { load_npy(tmp("trunc.npy")); }).find("shape and dtype need 64"), std::string::npos);
  std::string h = "{'descr': '|b1', 'fortran_order': False, 'shape': (1,), }";
  write_file_atomic(tmp("dt.npy"), std::string("\x93NUMPY\x01\x00", 8) + char(h.size()) + char(0) + h + "x");
  EXPECT_NE(error_of([] { load_npy(tmp("dt.npy")); }).find("unsupported .npy dtype '|b1'"), std::string::npos);
  EXPECT_NE(error_of([] { load_npy(tmp("missing.npy")); }).find("missing.npy: cannot open"), std::string::npos);
}

TEST(Png, RoundTripWithText) {
  Image img(37, 21, 3);
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = uint8_t((i * 7919) % 251);
  img.text["parameters"] = "a cat\nSteps: 20, Sampler: euler";
  write_png(tmp("a.png"), img);
  Image r = read_png(tmp("a.png"));
  EXPECT_EQ(r.width, 37);
  EXPECT_EQ(r.height, 21);
  EXPECT_EQ(r.channels, 3);
  EXPECT_EQ(r.pixels, img.pixels);
  EXPECT_EQ(r.text["parameters"], img.text["parameters"]);
  Image g(5, 4, 1);
  for (size_t i = 0; i < g.pixels.size(); ++i) g.pixels[i] = uint8_t(i * 13);
  write_png(tmp("g.png"), g);
  EXPECT_EQ(read_png(tmp("g.png")).pixels, g.pixels);
}

TEST(Png, TensorConversionAndGrid) {
  auto t = torch::rand({3, 8, 6}) * 2 - 1;
  Image img = tensor_to_image(t);
  auto back = image_to_tensor(img);
  EXPECT_LT((back - t).abs().max().item<float>(), 1.0f / 255 + 1e-6);
  Image grid = make_grid(torch::zeros({5, 1, 4, 4}), 3);
  EXPECT_EQ(grid.width, 3 * 4 + 4 * 2);
  EXPECT_EQ(grid.height, 2 * 4 + 3 * 2);
}

TEST(Png, MalformedAndTruncated) {
  write_file_atomic(tmp("x.png"), "not a png");
  EXPECT_NE(error_of([] { read_png(tmp("x.png")); }).find("not a PNG file"), std::string::npos);
  Image img(16, 16, 3, 128);
  write_png(tmp("t.png"), img);
  std::string b = read_file(tmp("t.png"));
  write_file_atomic(tmp("t.png"), b.substr(0, b.size() / 2));
  EXPECT_NE(error_of([] { read_png(tmp("t.png")); }).find("malformed PNG"), std::string::npos);
}

TEST(Fs, AtomicWriteLeavesNothingOnFailure) {
  std::string p = tmp("atomic.bin");
  std::remove(p.c_str());
  EXPECT_THROW(write_atomic_with(p, [](const std::string& t) {
                 std::ofstream(t) << "partial";
                 fail("writer failed");
               }),
               Error);
  EXPECT_FALSE(std::ifstream(p).good());
  EXPECT_FALSE(std::ifstream(p + ".tmp." + std::to_string(::getpid())).good());
}

TEST(Plot, DrawsSeriesInsideTheFrame) {
  Series s{"a", {1, 10, 100}, {1, 0.1, 0.01}, false};
  PlotOptions o;
  o.logx = o.logy = true;
  Image img = plot({s}, o);
  EXPECT_EQ(img.width, 900);
  // some pixels carry the first palette colour (31, 119, 180)
  int colored = 0;
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x) {
      uint8_t* p = img.at(x, y);
      colored += p[0] == 31 && p[1] == 119 && p[2] == 180;
    }
  EXPECT_GT(colored, 50);
}

TEST(Plot, LabeledGridPlacesScaledTilesAndLabels) {
  // 3 tiles of 4x5 in 2 columns; tile i is a constant gray (i - 1) in [-1, 1].
  auto t = torch::arange(3, torch::kFloat32).sub(1).reshape({3, 1, 1, 1}).expand({3, 1, 4, 5}).contiguous();
  const int scale = 3, gap = 2;
  Image img = labeled_grid(t, 2, {"ab", "c"}, {"row0", "row1"}, scale);
  const Image plain = make_grid(t, 2);
  const int left = 4 * 7 + 8, top = 13 + 6;  // 4-character row labels, one header line of the 7x13 font
  ASSERT_EQ(img.channels, 3);
  EXPECT_EQ(img.width, left + plain.width * scale);
  EXPECT_EQ(img.height, top + plain.height * scale);
  // Every pixel of the enlarged grid is the plain grid's pixel at (x / scale, y / scale).
  int mismatched = 0;
  for (int y = 0; y < plain.height * scale; ++y)
    for (int x = 0; x < plain.width * scale; ++x)
      mismatched += img.at(left + x, top + y)[1] != plain.pixels[size_t(y / scale) * plain.width + x / scale];
  EXPECT_EQ(mismatched, 0);
  EXPECT_EQ(img.at(left + gap * scale, top + gap * scale)[0], 0);                            // tile 0: black
  EXPECT_EQ(img.at(left + (gap + 5 + gap) * scale, top + (gap + 4 + gap) * scale)[0], 255);  // tile 3: absent
  // Labels are drawn: dark pixels in the header and in the left margin, none elsewhere outside the grid.
  auto dark = [&](int x0, int y0, int x1, int y1) {
    int d = 0;
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) d += img.at(x, y)[0] < 128;
    return d;
  };
  EXPECT_GT(dark(left, 0, img.width, top), 5);
  EXPECT_GT(dark(0, top, left, img.height), 5);
  EXPECT_EQ(dark(0, 0, left, top), 0);
  EXPECT_THROW(labeled_grid(t, 2, {}, {}, 0), Error);
}

// Pillow's Lanczos resampling and A1111's resize modes.
TEST(Resize, LanczosWeightsAndModes) {
  auto x = torch::rand({1, 3, 12, 20}, torch::kFloat64) * 2 - 1;
  EXPECT_TRUE(torch::equal(resize_image(x, 12, 20, "stretch"), x));  // same size: untouched
  // A constant image stays constant at any size (weights sum to 1).
  auto c = torch::full({1, 1, 7, 9}, 0.25, torch::kFloat64);
  for (auto [h, w] : {std::pair<int64_t, int64_t>{3, 4}, {20, 31}, {7, 2}})
    EXPECT_TRUE(torch::allclose(resize_image(c, h, w, "stretch"), torch::full({1, 1, h, w}, 0.25, torch::kFloat64), 0, 1e-12));
  // Upsampling 4 -> 8 along one axis: output i has centre (i + 0.5) / 2 and
  // weights lanczos3(j - centre + 0.5) over the input, normalised.
  auto v = torch::tensor({1.0, -2.0, 0.5, 3.0}, torch::kFloat64).reshape({1, 1, 1, 4});
  auto up = lanczos_resize_axis(v, 3, 8);
  auto L = [](double t) {
    if (t == 0) return 1.0;
    if (std::abs(t) >= 3) return 0.0;
    return 3 * std::sin(M_PI * t) * std::sin(M_PI * t / 3) / (M_PI * M_PI * t * t);
  };
  for (int i = 0; i < 8; ++i) {
    const double centre = (i + 0.5) * 0.5;
    double num = 0, den = 0;
    for (int j = 0; j < 4; ++j) {
      const double wgt = L(j - centre + 0.5);
      num += wgt * v[0][0][0][j].item<double>(), den += wgt;
    }
    EXPECT_NEAR(up[0][0][0][i].item<double>(), num / den, 1e-12) << i;
  }
  // Shrinking by 2 widens the kernel: a checkerboard averages out (antialiasing).
  auto board = (torch::arange(16, torch::kFloat64).remainder(2) * 2 - 1).reshape({1, 1, 1, 16});
  EXPECT_LT(lanczos_resize_axis(board, 3, 8).abs().max().item<double>(), 0.2);  // Lanczos' lobes leave some
  // crop: a 2:1 image to a square keeps the middle; fill: the bands repeat the edge rows.
  auto wide = torch::rand({1, 1, 8, 16}, torch::kFloat64);
  auto crop = resize_image(wide, 8, 8, "crop");
  EXPECT_TRUE(torch::allclose(crop, wide.narrow(3, 4, 8)));
  auto fill = resize_image(wide, 16, 16, "fill");
  ASSERT_EQ(fill.sizes(), (std::vector<int64_t>{1, 1, 16, 16}));
  EXPECT_TRUE(torch::allclose(fill.narrow(2, 4, 8), resize_image(wide, 8, 16, "stretch")));
  EXPECT_TRUE(torch::equal(fill.narrow(2, 0, 4), fill.narrow(2, 4, 1).expand({-1, -1, 4, -1})));
  EXPECT_TRUE(torch::equal(fill.narrow(2, 12, 4), fill.narrow(2, 11, 1).expand({-1, -1, 4, -1})));
  EXPECT_NE(error_of([&] { resize_image(wide, 8, 8, "zoom"); }).find("unknown resize mode 'zoom'"), std::string::npos);
  EXPECT_NE(error_of([&] { resize_image(wide, 0, 8, "crop"); }).find("must be positive"), std::string::npos);
}

}  // namespace
