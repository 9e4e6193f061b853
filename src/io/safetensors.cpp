// safetensors reader (memory-mapped, fully validated) and atomic writer.
#include "tweedie/io/safetensors.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"

namespace tweedie {

using json = nlohmann::json;

const torch::Tensor* SafeTensors::find(const std::string& name) const {
  for (auto& [k, v] : tensors)
    if (k == name) return &v;
  return nullptr;
}

const torch::Tensor& SafeTensors::at(const std::string& name) const {
  const torch::Tensor* t = find(name);
  if (!t) fail("missing tensor '", name, "'");
  return *t;
}

namespace {

struct DType {
  const char* name;
  torch::ScalarType type;
  size_t size;
};
const DType kDTypes[] = {{"F64", torch::kFloat64, 8}, {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
                         {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8}, {"I32", torch::kInt32, 4},
                         {"I16", torch::kInt16, 2},     {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
                         {"BOOL", torch::kBool, 1}};

const DType* dtype_named(const std::string& n) {
  for (auto& d : kDTypes)
    if (n == d.name) return &d;
  return nullptr;
}
const DType& dtype_of(torch::ScalarType t) {
  for (auto& d : kDTypes)
    if (d.type == t) return d;
  fail("safetensors: unsupported tensor dtype ", t);
}

}  // namespace

SafeTensors load_safetensors(const std::string& path) {
  auto map = map_file(path, 8, "truncated safetensors file");
  const size_t fsize = map->size;
  const char* base = map->data;
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t((unsigned char)base[i]) << (8 * i);
  if (n == 0 || n > fsize - 8 || n > (uint64_t(100) << 20))
    fail(path, ": safetensors header size ", n, " is out of bounds (file has ", fsize, " bytes)");
  const std::string header(base + 8, n);
  std::set<std::string> seen;
  std::string dup;
  json h;
  try {
    h = json::parse(header, [&](int depth, json::parse_event_t ev, json& parsed) {
      if (depth == 1 && ev == json::parse_event_t::key) {
        std::string k = parsed.get<std::string>();
        if (!seen.insert(k).second && dup.empty()) dup = k;
      }
      return true;
    });
  } catch (const std::exception& e) {
    fail(path, ": safetensors header is not valid JSON (", e.what(), ")");
  }
  if (!dup.empty()) fail(path, ": duplicate tensor name '", dup, "' in safetensors header");
  if (!h.is_object()) fail(path, ": safetensors header must be a JSON object");
  const size_t data_start = 8 + n, data_size = fsize - data_start;
  SafeTensors out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto& [name, e] : h.items()) {
    if (name == "__metadata__") {
      if (!e.is_object()) fail(path, ": __metadata__ must be an object of strings");
      for (auto& [k, v] : e.items()) {
        if (!v.is_string()) fail(path, ": __metadata__ value for '", k, "' is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets") || e.size() != 3)
      fail(path, ": tensor '", name, "' must have exactly dtype, shape and data_offsets");
    if (!e["dtype"].is_string()) fail(path, ": tensor '", name, "' dtype is not a string");
    const DType* dt = dtype_named(e["dtype"].get<std::string>());
    if (!dt) fail(path, ": tensor '", name, "' has unsupported dtype '", e["dtype"].get<std::string>(), "'");
    if (!e["shape"].is_array()) fail(path, ": tensor '", name, "' shape is not an array");
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (auto& d : e["shape"]) {
      if (!d.is_number_unsigned()) fail(path, ": tensor '", name, "' shape has a non-integer or negative entry");
      uint64_t v = d.get<uint64_t>();
      if (v > (uint64_t(1) << 40) || (v && numel > (uint64_t(1) << 42) / v))
        fail(path, ": tensor '", name, "' shape is too large");
      numel *= v;
      shape.push_back(int64_t(v));
    }
    auto& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(path, ": tensor '", name, "' data_offsets must be two non-negative integers");
    const uint64_t b = off[0].get<uint64_t>(), en = off[1].get<uint64_t>();
    if (b > en || en > data_size)
      fail(path, ": tensor '", name, "' data_offsets [", b, ", ", en, "] fall outside the ", data_size,
           "-byte data section (truncated file?)");
    if (en - b != numel * dt->size)
      fail(path, ": tensor '", name, "' has ", en - b, " bytes but shape x dtype needs ", numel * dt->size);
    ranges.push_back({b, en});
    torch::Tensor t;
    if (numel == 0) {
      t = torch::empty(shape, torch::TensorOptions().dtype(dt->type));
    } else {
      void* p = const_cast<char*>(base + data_start + b);
      if (reinterpret_cast<uintptr_t>(p) % dt->size != 0) {  // unaligned: copy out
        t = torch::empty(shape, torch::TensorOptions().dtype(dt->type));
        std::memcpy(t.data_ptr(), p, en - b);
      } else {
        t = torch::from_blob(p, shape, [map](void*) {}, torch::TensorOptions().dtype(dt->type));
      }
    }
    out.tensors.emplace_back(name, t);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second && ranges[i].second > ranges[i].first &&
        ranges[i - 1].second > ranges[i - 1].first)
      fail(path, ": safetensors tensors overlap in the data section (at byte ", ranges[i].first, ")");
  return out;
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  std::vector<torch::Tensor> data;
  std::set<std::string> names;
  for (auto& [name, t0] : tensors) {
    check(name != "__metadata__" && !name.empty(), path, ": invalid tensor name '", name, "'");
    check(names.insert(name).second, path, ": duplicate tensor name '", name, "'");
    auto t = t0.detach().cpu().contiguous();
    const DType& dt = dtype_of(t.scalar_type());
    const uint64_t bytes = t.numel() * dt.size;
    h[name] = {{"dtype", dt.name}, {"shape", t.sizes().vec()}, {"data_offsets", {off, off + bytes}}};
    off += bytes;
    data.push_back(t);
  }
  std::string hs = h.dump();
  hs += std::string((8 - hs.size() % 8) % 8, ' ');
  write_atomic_with(path, [&](const std::string& tmp) {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) fail(path, ": cannot create (", std::strerror(errno), ")");
    uint64_t n = hs.size();
    char len[8];
    for (int i = 0; i < 8; ++i) len[i] = char((n >> (8 * i)) & 0xff);
    f.write(len, 8);
    f.write(hs.data(), hs.size());
    for (auto& t : data) f.write(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
    f.close();
    if (!f) fail(path, ": write error");
  });
}

}  // namespace tweedie
