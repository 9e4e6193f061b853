// Dataset: the in-memory uint8 dataset shared by every source (see dataset.h):
// padding, conversion to [-1, 1] (x / 127.5 - 1), class lookup by name or
// index, the dataset spec parser, and the random horizontal flip.
// Verified in tests/test_train_data.cpp (TrainDataIdx, TrainDataFolder,
// TrainDataOrder).
#include <cctype>

#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/train/dataset.h"

namespace tweedie {

namespace {
std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower((unsigned char)c));
  return s;
}
}  // namespace

torch::Tensor to_unit_range(const torch::Tensor& u8) {
  check(u8.scalar_type() == torch::kUInt8, "to_unit_range expects uint8 images, got ", u8.scalar_type());
  return u8.to(torch::kFloat32).div_(127.5).sub_(1.0);
}

Dataset Dataset::padded(int64_t p, uint8_t value) const {
  check(p >= 0, "padding must be >= 0, got ", p);
  check(images.defined() && images.dim() == 4, "padding needs images [N, C, H, W]");
  Dataset d = *this;
  if (p == 0) return d;
  d.images = torch::constant_pad_nd(images, {p, p, p, p}, value).contiguous();
  return d;
}

torch::Tensor Dataset::batch_images(const torch::Tensor& idx, torch::Device device) const {
  auto sel = images.index_select(0, idx.to(torch::kCPU, torch::kInt64));
  return to_unit_range(sel.to(device));  // convert on the device: 4x less to transfer
}

torch::Tensor Dataset::batch_labels(const torch::Tensor& idx, torch::Device device) const {
  if (!labelled()) return {};
  return labels.index_select(0, idx.to(torch::kCPU, torch::kInt64)).to(device);
}

int64_t Dataset::class_index(const std::string& name_or_index) const {
  check(!class_names.empty(), source, ": the dataset has no classes (unlabelled), cannot select class '",
        name_or_index, "'");
  return tweedie::class_index(class_names, name_or_index);
}

int64_t class_index(const std::vector<std::string>& names, const std::string& name_or_index) {
  const std::string key = lower(name_or_index);
  for (size_t i = 0; i < names.size(); ++i)
    if (lower(names[i]) == key) return int64_t(i);
  bool digits = !key.empty() && key.size() < 10;
  for (char c : key) digits = digits && std::isdigit((unsigned char)c);
  if (digits) {
    const int64_t i = std::stoll(key);
    if (i < int64_t(names.size())) return i;
  }
  std::string known;
  for (auto& n : names) known += (known.empty() ? "" : ", ") + n;
  fail("unknown class '", name_or_index, "' (known: ", known, "; or an index 0-", int64_t(names.size()) - 1, ")");
}

Dataset load_dataset(const std::string& spec) {
  if (spec == "fashion-mnist" || spec == "fashion-mnist:train") return load_fashion_mnist("train");
  if (spec == "fashion-mnist:test") return load_fashion_mnist("test");
  if (is_directory(spec)) return load_image_folder(spec);
  fail("unknown dataset '", spec,
       "' (known: fashion-mnist, fashion-mnist:train, fashion-mnist:test, or a folder of PNG/JPEG images)");
}

torch::Tensor random_hflip(const torch::Tensor& x, torch::Generator gen, double p) {
  check(x.dim() == 4, "random_hflip expects [B, C, H, W], got ", x.sizes());
  check(p >= 0 && p <= 1, "flip probability must be in [0, 1], got ", p);
  auto u = torch::rand({x.size(0)}, gen, torch::TensorOptions().dtype(torch::kFloat64));
  auto flip = (u < p).to(x.device()).view({-1, 1, 1, 1});
  return torch::where(flip, x.flip({3}), x);
}

torch::Tensor random_translate(const torch::Tensor& x, int64_t max_shift, torch::Generator gen) {
  check(x.dim() == 4, "random_translate expects [B, C, H, W], got ", x.sizes());
  check(max_shift >= 0, "random_translate: max_shift must be >= 0, got ", max_shift);
  if (max_shift == 0) return x;
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3), m = max_shift;
  auto off = torch::randint(0, 2 * m + 1, {B, 2}, gen, torch::TensorOptions().dtype(torch::kInt64));
  auto padded = torch::replication_pad2d(x, {m, m, m, m});
  auto acc = off.accessor<int64_t, 2>();
  std::vector<torch::Tensor> out;
  out.reserve(B);
  for (int64_t i = 0; i < B; ++i)
    out.push_back(padded[i].narrow(1, acc[i][0], H).narrow(2, acc[i][1], W));
  return torch::stack(out);
}

}  // namespace tweedie
