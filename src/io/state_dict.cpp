// load_state_dict: safetensors or torch.save ZIP, told by the first bytes.
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

StateDict load_state_dict(const std::string& path, const LoadOptions& opts, std::map<std::string, std::string>* metadata_out) {
  if (is_directory(path)) fail(path, ": is a directory, expected a weights file");
  char magic[4] = {0, 0, 0, 0};
  {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail(path, ": cannot open (", std::strerror(errno), ")");
    f.read(magic, 4);
  }
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  if (std::memcmp(magic, "PK\x03\x04", 4) == 0 || (unsigned char)magic[0] == 0x80) {
    tensors = load_torch_file(path);
  } else {
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
