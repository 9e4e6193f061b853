// load_state_dict: safetensors or torch.save, told by the file's structure.
#include "tweedie/io/state_dict.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/pickle.h"
#include "tweedie/io/safetensors.h"

namespace tweedie {

torch::ScalarType dtype_from_string(const std::string& s) {
  if (s == "fp32" || s == "float32" || s == "float") return torch::kFloat32;
  if (s == "fp16" || s == "float16" || s == "half") return torch::kFloat16;
  if (s == "bf16" || s == "bfloat16") return torch::kBFloat16;
  if (s == "fp64" || s == "float64" || s == "double") return torch::kFloat64;
  fail("unknown dtype '", s, "' (expected fp32, fp16, bf16 or fp64)");
}

WeightsFormat detect_weights_format(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) fail(path, ": cannot open (", std::strerror(errno), ")");
  const uint64_t size = uint64_t(f.tellg());
  unsigned char b[14] = {0};
  f.seekg(0);
  f.read(reinterpret_cast<char*>(b), sizeof b);
  const uint64_t got = uint64_t(f.gcount());
  if (got >= 9 && b[8] == '{') {
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= uint64_t(b[i]) << (8 * i);
    if (n >= 1 && n <= size - 8) return WeightsFormat::Safetensors;
  }
  if (got >= 4 && std::memcmp(b, "PK\x03\x04", 4) == 0) return WeightsFormat::TorchZip;
  // PROTO n, LONG1 of 10 bytes: 0x1950a86a20f9469cfc6c little-endian.
  static const unsigned char legacy[12] = {0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  if (got == 14 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5 && std::memcmp(b + 2, legacy, 12) == 0)
    return WeightsFormat::TorchLegacy;
  return WeightsFormat::Unknown;
}

StateDict load_state_dict(const std::string& path, const LoadOptions& opts, std::map<std::string, std::string>* metadata_out) {
  if (is_directory(path)) fail(path, ": is a directory, expected a weights file");
  const WeightsFormat format = detect_weights_format(path);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  if (format == WeightsFormat::TorchZip || format == WeightsFormat::TorchLegacy) {
    tensors = load_torch_file(path);
  } else {  // safetensors; anything else gets safetensors' precise diagnosis
    SafeTensors st = load_safetensors(path);
    tensors = std::move(st.tensors);
    if (metadata_out) *metadata_out = std::move(st.metadata);
  }
  StateDict out;
  for (auto& [name, t] : tensors) {
    if (!out.emplace(name, t).second) fail(path, ": duplicate tensor name '", name, "'");
    if (opts.dtype && t.is_floating_point() && t.scalar_type() != *opts.dtype) out[name] = t.to(*opts.dtype);
  }
  return out;
}

StateDict with_prefix_removed(const StateDict& sd, const std::string& prefix) {
  StateDict out;
  for (auto it = sd.lower_bound(prefix); it != sd.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it)
    out.emplace_hint(out.end(), it->first.substr(prefix.size()), it->second);
  return out;
}

std::string describe_keys(const StateDict& sd, size_t n) {
  std::string s = std::to_string(sd.size()) + (sd.size() == 1 ? " key" : " keys");
  if (sd.empty()) return s;
  s += " like ";
  size_t i = 0;
  for (auto& [k, v] : sd) {
    if (i == n) {
      s += ", ...";
      break;
    }
    s += (i ? ", '" : "'") + k + "'";
    ++i;
  }
  return s;
}

}  // namespace tweedie
