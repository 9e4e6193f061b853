// State dicts from any weights file people have: name -> tensor, sorted by
// name.
//
//   .safetensors                      io/safetensors.h (memory-mapped)
//   .ckpt .pt .pth .bin (torch.save)  io/pickle.h (safe unpickler, memory-mapped
//                                     ZIP); a top-level "state_dict" dict (SD /
//                                     Lightning .ckpt) is unwrapped
//
// The format is told by the file's structure, not its extension, so a
// misnamed file still loads (detect_weights_format below).
// Tensors stay views over the mapped file unless a dtype conversion is asked
// for: `dtype` converts every floating-point tensor once, at load (integer and
// bool tensors are kept as they are).
// Verified in tests/test_sd_checkpoint.cpp (StateDict*).
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

namespace tweedie {

using StateDict = std::map<std::string, torch::Tensor>;

struct LoadOptions {
  std::optional<torch::ScalarType> dtype;  // convert floating tensors (fp32/fp16/bf16/fp64)
};

// What a weights file is, by structure (never by extension or one byte):
//   Safetensors  a little-endian u64 N, byte 8 is '{', and 8 + N <= file size
//   TorchZip     "PK\x03\x04" (torch.save since 1.6)
//   TorchLegacy  pickle PROTO (0x80, protocol 2..5) followed by LONG1 of the
//                legacy magic number 0x1950a86a20f9469cfc6c (torch.save before 1.6)
//   Unknown      anything else
// A safetensors header length may have any low byte (0x80 or 'P' included):
// the structural test decides, so such files are never taken for torch files.
enum class WeightsFormat { Safetensors, TorchZip, TorchLegacy, Unknown };
WeightsFormat detect_weights_format(const std::string& path);

StateDict load_state_dict(const std::string& path, const LoadOptions& opts = {},
                          std::map<std::string, std::string>* metadata_out = nullptr);

// "fp32"/"float32"/"float", "fp16"/"float16"/"half", "bf16"/"bfloat16", "fp64"/"float64"/"double".
torch::ScalarType dtype_from_string(const std::string& s);

// Keys starting with `prefix`, with it removed ("" keeps everything).
StateDict with_prefix_removed(const StateDict& sd, const std::string& prefix);

// "12 keys like 'a.weight', 'b.bias', 'c' ..." (the first n names) for error messages.
std::string describe_keys(const StateDict& sd, size_t n = 3);

}  // namespace tweedie
