// IDX reader (LeCun, Cortes & Burges, the MNIST database format; Fashion-MNIST,
// Xiao, Rasul & Vollgraf 2017, uses the same files). Layout: bytes 0-1 zero,
// byte 2 the element type (0x08 = unsigned byte), byte 3 the number of
// dimensions d, then d big-endian uint32 sizes, then the data row-major. Read
// through zlib's gzopen/gzread, which accepts gzip-compressed and plain files.
// Everything is validated before and after reading (magic, type, dimensions,
// size bounds, truncation, trailing bytes, gzip stream errors, label range and
// count), and every error names the file.
// Verified in tests/test_train_data.cpp (TrainDataIdx): the real Fashion-MNIST
// files (shapes and the 6000 / 1000 per-class histograms), round trips of small
// gz and plain files, and each rejection message.
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "tweedie/core/error.h"
#include "tweedie/train/dataset.h"

namespace tweedie {

namespace {

class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path) {
    errno = 0;
    f_ = gzopen(path.c_str(), "rb");
    if (!f_) fail(path, ": cannot open (", errno ? std::strerror(errno) : "out of memory", ")");
  }
  ~GzFile() {
    if (f_) gzclose(f_);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  // Read up to n bytes; returns how many were read (< n only at end of data).
  size_t read(void* dst, size_t n) {
    size_t got = 0;
    while (got < n) {
      const unsigned chunk = unsigned(std::min<size_t>(n - got, size_t(1) << 30));
      const int r = gzread(f_, static_cast<char*>(dst) + got, chunk);
      if (r < 0) {
        int code = 0;
        const char* msg = gzerror(f_, &code);
        fail(path_, ": corrupt gzip stream (", msg ? msg : "unknown error", ")");
      }
      if (r == 0) break;
      got += size_t(r);
    }
    if (got < n) {  // a gzip stream cut short reports Z_BUF_ERROR here
      int code = 0;
      const char* msg = gzerror(f_, &code);
      if (code != Z_OK && code != Z_BUF_ERROR) fail(path_, ": corrupt gzip stream (", msg ? msg : "", ")");
    }
    return got;
  }

 private:
  std::string path_;
  gzFile f_ = nullptr;
};

struct IdxHeader {
  std::vector<int64_t> dims;
};

// Reads and checks the header; expects `want_dims` dimensions of unsigned bytes.
IdxHeader read_header(GzFile& f, const std::string& path, int want_dims, const char* what) {
  unsigned char m[4];
  if (f.read(m, 4) < 4) fail(path, ": not an IDX file (shorter than its 4-byte magic number)");
  if (m[0] != 0 || m[1] != 0)
    fail(path, ": not an IDX file (bad magic number 0x", std::hex, (m[0] << 24 | m[1] << 16 | m[2] << 8 | m[3]),
         ", expected 0x0000080", want_dims, ")");
  if (m[2] != 0x08)
    fail(path, ": unsupported IDX element type 0x", std::hex, int(m[2]), " (only unsigned bytes, 0x08, are read)");
  if (m[3] != want_dims)
    fail(path, ": expected ", what, " (an idx", want_dims, "-ubyte file with ", want_dims, " dimensions), found ",
         int(m[3]), " dimensions");
  IdxHeader h;
  for (int i = 0; i < want_dims; ++i) {
    unsigned char b[4];
    if (f.read(b, 4) < 4) fail(path, ": truncated IDX header (dimension ", i, " missing)");
    const int64_t d = int64_t(b[0]) << 24 | int64_t(b[1]) << 16 | int64_t(b[2]) << 8 | int64_t(b[3]);
    if (d == 0) fail(path, ": dimension ", i, " is zero");
    h.dims.push_back(d);
  }
  int64_t total = 1;
  for (auto d : h.dims) {
    total *= d;
    if (total > (int64_t(1) << 34)) fail(path, ": implausible IDX dimensions (more than 16 GiB of data)");
  }
  return h;
}

void read_body(GzFile& f, const std::string& path, void* dst, int64_t n) {
  const size_t got = f.read(dst, size_t(n));
  if (int64_t(got) < n)
    fail(path, ": truncated: the header promises ", n, " data bytes, the file holds ", got);
  char extra[4096];
  size_t more = 0, r;
  while ((r = f.read(extra, sizeof extra)) > 0) more += r;
  if (more > 0) fail(path, ": ", more, " bytes of trailing data after the ", n, " the header describes");
}

}  // namespace

torch::Tensor read_idx_images(const std::string& path) {
  GzFile f(path);
  auto h = read_header(f, path, 3, "images");
  auto out = torch::empty({h.dims[0], 1, h.dims[1], h.dims[2]}, torch::kUInt8);
  read_body(f, path, out.data_ptr<uint8_t>(), out.numel());
  return out;
}

torch::Tensor read_idx_labels(const std::string& path) {
  GzFile f(path);
  auto h = read_header(f, path, 1, "labels");
  auto raw = torch::empty({h.dims[0]}, torch::kUInt8);
  read_body(f, path, raw.data_ptr<uint8_t>(), raw.numel());
  return raw.to(torch::kInt64);
}

Dataset load_idx(const std::string& images_path, const std::string& labels_path,
                 std::vector<std::string> class_names) {
  Dataset d;
  d.images = read_idx_images(images_path);
  d.labels = read_idx_labels(labels_path);
  d.source = images_path;
  check(d.labels.size(0) == d.images.size(0), labels_path, ": ", d.labels.size(0), " labels for ", d.images.size(0),
        " images in ", images_path);
  const int64_t max_label = d.labels.max().item<int64_t>();
  if (class_names.empty()) {
    for (int64_t k = 0; k <= max_label; ++k) class_names.push_back(std::to_string(k));
  } else if (max_label >= int64_t(class_names.size())) {
    const int64_t at = d.labels.ge(int64_t(class_names.size())).nonzero()[0][0].item<int64_t>();
    fail(labels_path, ": label ", d.labels[at].item<int64_t>(), " at index ", at, " is out of range for ",
         class_names.size(), " classes");
  }
  d.class_names = std::move(class_names);
  return d;
}

const std::vector<std::string>& fashion_mnist_classes() {
  static const std::vector<std::string> names = {"t-shirt", "trouser", "pullover", "dress",   "coat",
                                                 "sandal",  "shirt",   "sneaker",  "bag",     "ankle-boot"};
  return names;
}

std::string fashion_mnist_dir() { return "/usr/share/datasets/fashion-mnist"; }

Dataset load_fashion_mnist(const std::string& split, const std::string& dir) {
  check(split == "train" || split == "test", "unknown Fashion-MNIST split '", split, "' (known: train, test)");
  const std::string base = (dir.empty() ? fashion_mnist_dir() : dir) + "/" + (split == "train" ? "train" : "t10k");
  const std::string images = base + "-images-idx3-ubyte.gz", labels = base + "-labels-idx1-ubyte.gz";
  if (dir.empty() && !std::filesystem::exists(images))
    fail("Fashion-MNIST not found: ", images, " is missing (install Debian's dataset-fashion-mnist package)");
  Dataset d = load_idx(images, labels, fashion_mnist_classes());
  d.source = "fashion-mnist:" + split;
  return d;
}

}  // namespace tweedie
