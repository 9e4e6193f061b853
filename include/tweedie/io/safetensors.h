// safetensors (https://github.com/huggingface/safetensors) read and write.
//
// Reading memory-maps the file (copy-on-write) and validates everything
// before any tensor is touched: header size bounds, JSON schema, known dtype,
// shape x dtype size against the byte range, offsets inside the buffer, no
// overlapping ranges, no duplicate names. A malformed or truncated file gets
// an Error naming the file and the problem, never an out-of-bounds read.
// Writing is atomic (temporary file, then rename).
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace tweedie {

struct SafeTensors {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;  // in file order
  std::map<std::string, std::string> metadata;                 // "__metadata__"

  const torch::Tensor* find(const std::string& name) const;
  const torch::Tensor& at(const std::string& name) const;  // throws Error naming the key
};

SafeTensors load_safetensors(const std::string& path);
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace tweedie
