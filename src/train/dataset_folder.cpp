// Image-folder datasets (the torchvision ImageFolder layout): DIR/CLASS/*.png|jpg
// gives labelled data with classes = the sorted subfolder names (label = rank),
// DIR/*.png|jpg gives unlabelled data. PNG through read_png (io/png.cpp), JPEG
// through libjpeg (decoded here, from memory, with libjpeg's setjmp error
// protocol so a corrupt file is an Error naming it, never an abort).
//
// Choices, documented in dataset.h:
//   - channel counts may differ: with FolderOptions::channels = 0 the dataset is
//     RGB if any image has colour (gray replicated to R = G = B) and gray
//     otherwise; alpha is dropped (the colour channels are kept as stored); a
//     forced 1-channel dataset converts colour with BT.601 luma
//     Y = 0.299 R + 0.587 G + 0.114 B (rounded).
//   - sizes may not differ: the error names one file of each size.
//   - libjpeg warnings are errors (it would fill corrupt or missing data with gray).
// Verified in tests/test_train_data.cpp (TrainDataFolder): class subfolders of
// PNGs and a JPEG written by the test with libjpeg, a flat folder, gray/RGB
// mixing, and the empty-folder, mixed-size and corrupt-image errors.
#include <cstdio>  // before jpeglib.h, which uses FILE

#include <jpeglib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/train/dataset.h"

namespace tweedie {

namespace fs = std::filesystem;

namespace {

struct JpegErr {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_error_exit(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegErr*>(c->err);
  (*c->err->format_message)(c, e->message);
  std::longjmp(e->jump, 1);
}

void jpeg_emit_message(j_common_ptr c, int level) {
  if (level < 0) jpeg_error_exit(c);  // warnings: corrupt or truncated data
}

// Decodes into out; returns false with e.message set on failure. Only trivially
// destructible locals live in this frame, as longjmp requires.
bool decode_jpeg(const std::string& bytes, Image& out, JpegErr& e) {
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&e.mgr);
  e.mgr.error_exit = jpeg_error_exit;
  e.mgr.emit_message = jpeg_emit_message;
  e.message[0] = 0;
  if (setjmp(e.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), (unsigned long)bytes.size());
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = cinfo.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
  if (cinfo.image_width > 65536 || cinfo.image_height > 65536) {
    std::snprintf(e.message, sizeof e.message, "image too large (%ux%u)", cinfo.image_width, cinfo.image_height);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_start_decompress(&cinfo);
  out.width = int(cinfo.output_width);
  out.height = int(cinfo.output_height);
  out.channels = int(cinfo.output_components);
  out.pixels.assign(size_t(out.width) * out.height * out.channels, 0);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = &out.pixels[size_t(cinfo.output_scanline) * out.width * out.channels];
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

bool has_image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  for (auto& c : ext) c = char(std::tolower((unsigned char)c));
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

bool hidden(const fs::path& p) { return !p.filename().empty() && p.filename().string()[0] == '.'; }

// Sorted image files directly inside dir, and its (non-hidden) subdirectories.
void scan(const std::string& dir, std::vector<std::string>& images, std::vector<std::string>& subdirs) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  if (ec) fail(dir, ": cannot list folder (", ec.message(), ")");
  for (; it != end; it.increment(ec)) {
    if (ec) fail(dir, ": cannot list folder (", ec.message(), ")");
    const fs::path p = it->path();
    if (hidden(p)) continue;
    std::error_code e2;
    if (it->is_directory(e2))
      subdirs.push_back(p.string());
    else if (has_image_extension(p) && it->is_regular_file(e2))
      images.push_back(p.string());
  }
  std::sort(images.begin(), images.end());
  std::sort(subdirs.begin(), subdirs.end());
}

// Convert an image to c channels (1 or 3): gray -> RGB by replication, RGB(A)
// -> gray by BT.601 luma, alpha dropped.
void copy_converted(const Image& im, int c, uint8_t* dst_chw) {
  const size_t hw = size_t(im.width) * im.height;
  for (size_t i = 0; i < hw; ++i) {
    const uint8_t* px = &im.pixels[i * im.channels];
    if (c == 1) {
      dst_chw[i] = im.channels == 1 ? px[0]
                                    : uint8_t(std::lround(0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2]));
    } else {
      for (int k = 0; k < 3; ++k) dst_chw[k * hw + i] = im.channels == 1 ? px[0] : px[k];
    }
  }
}

}  // namespace

Image read_jpeg(const std::string& path) {
  const std::string bytes = read_file(path);
  if (bytes.size() < 3 || (unsigned char)bytes[0] != 0xFF || (unsigned char)bytes[1] != 0xD8)
    fail(path, ": not a JPEG file");
  Image out;
  JpegErr e;
  if (!decode_jpeg(bytes, out, e)) fail(path, ": corrupt JPEG (", e.message, ")");
  return out;
}

Image read_image(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open (", std::strerror(errno), ")");
  std::string head(8, '\0');
  f.read(&head[0], 8);
  head.resize(size_t(f.gcount()));
  if (head.size() >= 8 && std::memcmp(head.data(), "\x89PNG\r\n\x1a\n", 8) == 0) return read_png(path);
  if (head.size() >= 2 && (unsigned char)head[0] == 0xFF && (unsigned char)head[1] == 0xD8) return read_jpeg(path);
  fail(path, ": not a PNG or JPEG image (unrecognised leading bytes)");
}

Dataset load_image_folder(const std::string& dir, const FolderOptions& opt) {
  check(opt.channels == 0 || opt.channels == 1 || opt.channels == 3, "image folder channels must be 0 (auto), 1 or 3, got ",
        opt.channels);
  check(is_directory(dir), dir, ": not a directory");
  std::vector<std::string> top, subdirs;
  scan(dir, top, subdirs);

  Dataset d;
  d.source = dir;
  std::vector<std::string> files;
  std::vector<int64_t> labels;
  if (!subdirs.empty()) {  // class subfolders
    if (!top.empty())
      fail(top.front(), ": image at the top level of a folder with class subfolders (", subdirs.front(),
           ", ...); move it into a class folder");
    for (size_t k = 0; k < subdirs.size(); ++k) {
      std::vector<std::string> imgs, nested;
      scan(subdirs[k], imgs, nested);
      if (imgs.empty()) fail(subdirs[k], ": class folder has no images (.png, .jpg, .jpeg)");
      d.class_names.push_back(fs::path(subdirs[k]).filename().string());
      for (auto& f : imgs) files.push_back(f), labels.push_back(int64_t(k));
    }
  } else {
    files = top;
  }
  if (files.empty()) fail(dir, ": no images (.png, .jpg, .jpeg) found");

  std::vector<Image> ims;
  ims.reserve(files.size());
  int colour = 1;
  for (size_t i = 0; i < files.size(); ++i) {
    ims.push_back(read_image(files[i]));
    const Image& im = ims.back();
    if (im.width != ims[0].width || im.height != ims[0].height)
      fail(dir, ": images differ in size: ", files[0], " is ", ims[0].width, "x", ims[0].height, ", ", files[i],
           " is ", im.width, "x", im.height, " (all images must have one size)");
    if (im.channels >= 3) colour = 3;
  }
  const int c = opt.channels ? opt.channels : colour;
  const int64_t h = ims[0].height, w = ims[0].width;
  d.images = torch::empty({int64_t(ims.size()), c, h, w}, torch::kUInt8);
  uint8_t* dst = d.images.data_ptr<uint8_t>();
  for (size_t i = 0; i < ims.size(); ++i) copy_converted(ims[i], c, dst + i * size_t(c * h * w));
  if (!labels.empty()) d.labels = torch::tensor(labels, torch::kInt64);
  return d;
}

}  // namespace tweedie
