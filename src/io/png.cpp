// PNG: written directly (signature, IHDR, tEXt, IDAT through zlib, IEND, with
// per-row filter choice), read with libpng's simplified API plus a chunk walk
// for tEXt. Writes are atomic.
#include <png.h>
#include <zlib.h>

#include <cstring>

#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"

namespace tweedie {

namespace {

void put32(std::string& o, uint32_t v) {
  for (int i = 3; i >= 0; --i) o += char((v >> (8 * i)) & 0xff);
}

void chunk(std::string& o, const char* type, const std::string& data) {
  put32(o, data.size());
  std::string td = std::string(type, 4) + data;
  o += td;
  put32(o, crc32(0, reinterpret_cast<const Bytef*>(td.data()), td.size()));
}

uint8_t paeth(int a, int b, int c) {
  int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

}  // namespace

void write_png(const std::string& path, const Image& img) {
  check(img.width > 0 && img.height > 0, path, ": cannot write an empty image");
  check(img.channels >= 1 && img.channels <= 4 && img.channels != 2, path, ": unsupported channel count ",
        img.channels);
  check(img.pixels.size() == size_t(img.width) * img.height * img.channels, path, ": pixel buffer size mismatch");
  const int bpp = img.channels, stride = img.width * bpp;
  // Filter each row with the filter (0..4) minimizing the sum of absolute residuals.
  std::string raw;
  raw.reserve(size_t(stride + 1) * img.height);
  std::vector<uint8_t> cand(stride);
  for (int y = 0; y < img.height; ++y) {
    const uint8_t* row = &img.pixels[size_t(y) * stride];
    const uint8_t* up = y ? row - stride : nullptr;
    int best = 0;
    long best_cost = -1;
    std::vector<uint8_t> best_row;
    for (int f = 0; f <= 4; ++f) {
      long cost = 0;
      for (int i = 0; i < stride; ++i) {
        int a = i >= bpp ? row[i - bpp] : 0, b = up ? up[i] : 0, c = (up && i >= bpp) ? up[i - bpp] : 0;
        int pred = f == 0 ? 0 : f == 1 ? a : f == 2 ? b : f == 3 ? (a + b) / 2 : paeth(a, b, c);
        cand[i] = uint8_t(row[i] - pred);
        cost += std::abs(int(int8_t(cand[i])));
      }
      if (best_cost < 0 || cost < best_cost) best_cost = cost, best = f, best_row = cand;
    }
    raw += char(best);
    raw.append(reinterpret_cast<const char*>(best_row.data()), stride);
  }
  uLongf zlen = compressBound(raw.size());
  std::string z(zlen, '\0');
  check(compress2(reinterpret_cast<Bytef*>(&z[0]), &zlen, reinterpret_cast<const Bytef*>(raw.data()), raw.size(),
                  6) == Z_OK,
        path, ": zlib compression failed");
  z.resize(zlen);
  std::string out = "\x89PNG\r\n\x1a\n";
  std::string ihdr;
  put32(ihdr, img.width);
  put32(ihdr, img.height);
  ihdr += char(8);
  ihdr += char(img.channels == 1 ? 0 : img.channels == 3 ? 2 : 6);
  ihdr += std::string("\0\0\0", 3);
  chunk(out, "IHDR", ihdr);
  for (auto& [k, v] : img.text) {
    check(!k.empty() && k.size() < 80, path, ": PNG text key must be 1-79 characters");
    chunk(out, "tEXt", k + std::string(1, '\0') + v);
  }
  chunk(out, "IDAT", z);
  chunk(out, "IEND", "");
  write_file_atomic(path, out);
}

Image read_png(const std::string& path) {
  const std::string bytes = read_file(path);
  if (bytes.size() < 8 || std::memcmp(bytes.data(), "\x89PNG\r\n\x1a\n", 8) != 0) fail(path, ": not a PNG file");
  // Every chunk must fit in the file: libpng allocates a chunk's claimed length before reading it (a 139-byte
  // file with a tEXt chunk claiming 1.6 GB got a 1.6 GB buffer).
  for (size_t pos = 8; pos + 8 <= bytes.size();) {
    uint32_t len = 0;
    for (int i = 0; i < 4; ++i) len = (len << 8) | (unsigned char)bytes[pos + i];
    if (size_t(len) + 12 > bytes.size() - pos)
      fail(path, ": malformed PNG (chunk at byte ", pos, " claims ", len, " bytes, past the end of the ", bytes.size(),
           "-byte file)");
    if (bytes.compare(pos + 4, 4, "IEND") == 0) break;
    pos += 12 + size_t(len);
  }
  png_image im;
  std::memset(&im, 0, sizeof im);
  im.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&im, bytes.data(), bytes.size()))
    fail(path, ": malformed PNG (", im.message, ")");
  const bool color = im.format & PNG_FORMAT_FLAG_COLOR, alpha = im.format & PNG_FORMAT_FLAG_ALPHA;
  im.format = color ? (alpha ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB) : (alpha ? PNG_FORMAT_GA : PNG_FORMAT_GRAY);
  if (im.width > 65536 || im.height > 65536) {
    png_image_free(&im);
    fail(path, ": image too large (", im.width, "x", im.height, ")");
  }
  // Deflate expands at most 1032:1 and a 1-bit pixel becomes at most 4 bytes: a larger image cannot come from
  // this file (a 69-byte PNG claiming 65536x65536 RGBA would otherwise allocate 16 GiB before failing).
  const uint64_t need = uint64_t(im.width) * im.height * PNG_IMAGE_SAMPLE_CHANNELS(im.format);
  if (need > uint64_t(bytes.size()) * 1032 * 32 + (uint64_t(1) << 20)) {
    png_image_free(&im);
    fail(path, ": malformed PNG (", im.width, "x", im.height, " pixels cannot come from ", bytes.size(), " bytes)");
  }
  Image out(im.width, im.height, PNG_IMAGE_SAMPLE_CHANNELS(im.format));
  if (!png_image_finish_read(&im, nullptr, out.pixels.data(), 0, nullptr)) {
    std::string msg = im.message;
    png_image_free(&im);
    fail(path, ": malformed PNG (", msg, ")");
  }
  if (out.channels == 2) {  // gray + alpha -> gray
    Image g(out.width, out.height, 1);
    for (size_t i = 0; i < g.pixels.size(); ++i) g.pixels[i] = out.pixels[2 * i];
    out = std::move(g);
  }
  // tEXt chunks
  size_t pos = 8;
  while (pos + 12 <= bytes.size()) {
    uint32_t len = 0;
    for (int i = 0; i < 4; ++i) len = (len << 8) | (unsigned char)bytes[pos + i];
    if (pos + 12 + size_t(len) > bytes.size()) break;
    std::string type = bytes.substr(pos + 4, 4);
    if (type == "tEXt") {
      std::string d = bytes.substr(pos + 8, len);
      auto z = d.find('\0');
      if (z != std::string::npos) out.text[d.substr(0, z)] = d.substr(z + 1);
    }
    if (type == "IEND") break;
    pos += 12 + len;
  }
  return out;
}

Image tensor_to_image(const torch::Tensor& chw, double lo, double hi) {
  check(chw.dim() == 3 && (chw.size(0) == 1 || chw.size(0) == 3), "image tensor must be [1 or 3, H, W], got ",
        chw.sizes());
  auto t = ((chw.to(torch::kFloat32).cpu() - lo) / (hi - lo) * 255.0).round().clamp(0, 255).to(torch::kUInt8);
  t = t.permute({1, 2, 0}).contiguous();
  Image img(chw.size(2), chw.size(1), chw.size(0));
  std::memcpy(img.pixels.data(), t.data_ptr(), img.pixels.size());
  return img;
}

torch::Tensor image_to_tensor(const Image& img, double lo, double hi) {
  auto t = torch::from_blob(const_cast<uint8_t*>(img.pixels.data()), {img.height, img.width, img.channels},
                            torch::kUInt8)
               .clone()
               .permute({2, 0, 1})
               .to(torch::kFloat32);
  return t / 255.0 * (hi - lo) + lo;
}

Image make_grid(const torch::Tensor& nchw, int cols, double lo, double hi) {
  check(nchw.dim() == 4, "grid needs [N, C, H, W]");
  const int n = nchw.size(0), c = nchw.size(1), h = nchw.size(2), w = nchw.size(3), gap = 2;
  cols = std::max(1, std::min(cols, n));
  const int rows = (n + cols - 1) / cols;
  Image grid(cols * w + (cols + 1) * gap, rows * h + (rows + 1) * gap, c, 255);
  for (int i = 0; i < n; ++i) {
    Image tile = tensor_to_image(nchw[i], lo, hi);
    int ox = gap + (i % cols) * (w + gap), oy = gap + (i / cols) * (h + gap);
    for (int y = 0; y < h; ++y) std::memcpy(grid.at(ox, oy + y), tile.at(0, y), size_t(w) * c);
  }
  return grid;
}

}  // namespace tweedie
