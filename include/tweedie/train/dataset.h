// Training data: a whole dataset held in memory as uint8 images [N, C, H, W]
// with int64 labels, read from IDX files (MNIST / Fashion-MNIST, gzip or
// plain; dataset_idx.cpp) or image folders (PNG / JPEG, optional class
// subfolders; dataset_folder.cpp), and a deterministic, resumable data order
// (data_order.cpp).
//
// Conversion to the model's range is x / 127.5 - 1 (uint8 0..255 -> [-1, 1]),
// done per batch so the stored dataset stays uint8 (Fashion-MNIST train: 47 MB).
//
// Verified in tests/test_train_data.cpp: the real Fashion-MNIST files
// (60000 / 10000 images, 6000 / 1000 per class), small IDX and image-folder
// fixtures written by the test, every rejection message, and the data order's
// determinism, resumability and per-epoch coverage.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "tweedie/io/image.h"

namespace tweedie {

struct Dataset {
  torch::Tensor images;                  // uint8 [N, C, H, W], 0..255, CPU, contiguous
  torch::Tensor labels;                  // int64 [N] in [0, num_classes()), or undefined (unlabelled)
  std::vector<std::string> class_names;  // empty when unlabelled
  std::string source;                    // where it was read from (for messages)

  int64_t size() const { return images.defined() ? images.size(0) : 0; }
  int64_t channels() const { return images.size(1); }
  int64_t height() const { return images.size(2); }
  int64_t width() const { return images.size(3); }
  bool labelled() const { return labels.defined(); }
  int64_t num_classes() const { return int64_t(class_names.size()); }

  // Pad every image by p pixels on each side with a constant value. Fashion-MNIST
  // 28x28 -> 32x32 is padded(2) (value 0 is its black background, -1 after conversion).
  Dataset padded(int64_t p, uint8_t value = 0) const;
  // Images idx (int64 [B]) as float32 [B, C, H, W] in [-1, 1] on device.
  torch::Tensor batch_images(const torch::Tensor& idx, torch::Device device = torch::kCPU) const;
  // Labels idx as int64 [B] on device; undefined if the dataset is unlabelled.
  torch::Tensor batch_labels(const torch::Tensor& idx, torch::Device device = torch::kCPU) const;
  // Class index from a name (case-insensitive) or a decimal index; Error listing the names.
  int64_t class_index(const std::string& name_or_index) const;
};

// uint8 0..255 -> float32 [-1, 1] (x / 127.5 - 1).
torch::Tensor to_unit_range(const torch::Tensor& u8);

// Class index of name_or_index in names: an exact (case-insensitive) name or a
// decimal index in range. Error: "unknown class 'x' (known: a, b, ...; or an index 0-K)".
int64_t class_index(const std::vector<std::string>& names, const std::string& name_or_index);

// ---- IDX (LeCun's MNIST format; dataset_idx.cpp) ----------------------------
// Header: two zero bytes, element type (0x08 = unsigned byte, the only type
// accepted), number of dimensions, then each dimension as a big-endian uint32,
// then the data, row-major. Files may be gzip-compressed or plain (zlib reads
// both). Every error names the file: cannot open, bad magic, wrong type or
// dimension count, zero or implausible dimensions, truncated data, trailing bytes,
// corrupt gzip stream.
torch::Tensor read_idx_images(const std::string& path);  // idx3-ubyte -> uint8 [N, 1, H, W]
torch::Tensor read_idx_labels(const std::string& path);  // idx1-ubyte -> int64 [N]
// Images and labels together: counts must match and labels lie in
// [0, class_names.size()); with no class names given they are "0".."K-1" with
// K = max label + 1.
Dataset load_idx(const std::string& images_path, const std::string& labels_path,
                 std::vector<std::string> class_names = {});

// Fashion-MNIST (Xiao et al. 2017), from Debian's dataset-fashion-mnist package.
const std::vector<std::string>& fashion_mnist_classes();  // t-shirt, trouser, ..., ankle-boot
std::string fashion_mnist_dir();                           // /usr/share/datasets/fashion-mnist
// split: "train" (60000) or "test" (10000); dir "" = fashion_mnist_dir().
Dataset load_fashion_mnist(const std::string& split = "train", const std::string& dir = "");

// ---- image folders (dataset_folder.cpp) ------------------------------------
// Decode a JPEG (libjpeg): grayscale -> 1 channel, everything else -> RGB.
// libjpeg warnings (truncated or corrupt data, which it would otherwise fill
// with gray) are errors. Throws Error naming the file.
Image read_jpeg(const std::string& path);
// PNG or JPEG by the file's leading bytes (not its name).
Image read_image(const std::string& path);

struct FolderOptions {
  // Channels of the dataset: 0 = automatic (3 if any image has colour, else 1),
  // 1 = gray (colour images converted with BT.601 luma), 3 = RGB.
  int channels = 0;
};
// dir/CLASS/*.{png,jpg,jpeg}: labelled, classes = sorted subfolder names; or
// dir/*.{png,jpg,jpeg}: unlabelled. Files sorted by name; hidden entries and
// other extensions are ignored. Channel counts may differ: gray images are
// replicated to RGB, alpha is dropped (see FolderOptions). Errors name the
// folder or file: not a directory, no images, an empty class folder, images at
// the top level next to class folders, two files of different sizes, an
// unreadable or corrupt image.
Dataset load_image_folder(const std::string& dir, const FolderOptions& opt = {});

// "fashion-mnist", "fashion-mnist:train", "fashion-mnist:test", or a directory
// (an image folder). Error naming the spec otherwise.
Dataset load_dataset(const std::string& spec);

// ---- data order (data_order.cpp) --------------------------------------------
// Epoch e visits the indices in the order of a Fisher-Yates shuffle driven by
// splitmix64 seeded from (seed, e): a pure function of (seed, epoch), the same
// on every platform and torch version. A cursor (epoch, position) over it
// makes the order resumable: save state(), restore() it, and next() continues
// exactly where it stopped.
class DataOrder {
 public:
  struct State {
    uint64_t seed = 0;
    int64_t epoch = 0;     // current epoch
    int64_t position = 0;  // indices of this epoch already handed out
  };
  // drop_last: an epoch ends when fewer than batch_size indices remain (every
  // batch full); otherwise its last batch may be shorter.
  DataOrder(int64_t size, int64_t batch_size, uint64_t seed, bool drop_last = true);

  static std::vector<int64_t> permutation(int64_t n, uint64_t seed, int64_t epoch);

  torch::Tensor next();  // int64 [B] indices of the next batch; starts a new epoch as needed
  State state() const { return st_; }
  void restore(const State& s);  // Error if position is outside [0, size]
  // As named tensors for a checkpoint ("data.seed", "data.epoch", "data.position").
  std::vector<std::pair<std::string, torch::Tensor>> state_tensors() const;
  void load_state(const std::function<const torch::Tensor*(const std::string&)>& lookup);

  int64_t size() const { return n_; }
  int64_t batch_size() const { return b_; }
  int64_t batches_per_epoch() const { return drop_last_ ? n_ / b_ : (n_ + b_ - 1) / b_; }

 private:
  int64_t n_, b_;
  bool drop_last_;
  State st_;
  int64_t perm_epoch_ = -1;
  std::vector<int64_t> perm_;
};

// Flip each image of x [B, C, H, W] left-right with probability p, drawing one
// uniform per image from gen (on the CPU; x may live on any device).
torch::Tensor random_hflip(const torch::Tensor& x, torch::Generator gen, double p = 0.5);

// Translate each image of x [B, C, H, W] by integer offsets drawn uniformly
// from [-max_shift, max_shift] in each direction (from gen), filling the
// uncovered border by replicating the edge pixels.
torch::Tensor random_translate(const torch::Tensor& x, int64_t max_shift, torch::Generator gen);

}  // namespace tweedie
