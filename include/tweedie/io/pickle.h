// A safe unpickler for torch.save files, and a torch.save-compatible writer.
//
// torch.save writes a ZIP (io/zip.h) holding <prefix>/data.pkl, a pickle
// (protocol 2) of the saved object in which each tensor is
// torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...) and
// each storage a persistent id ('storage', torch.FloatStorage, key, device,
// numel) whose bytes are the entry <prefix>/data/<key>.
//
// Python's pickle runs arbitrary code: GLOBAL names any callable and REDUCE
// calls it. Here nothing is ever called. The unpickler is a stack machine
// over plain values (None, bool, int, float, str, bytes, tuple, list, dict)
// whose GLOBAL is checked against an allow-list:
//   - rebuilt:  torch._utils._rebuild_tensor_v2, _rebuild_parameter,
//               _rebuild_parameter_with_state, torch._tensor._rebuild_from_type_v2,
//               collections.OrderedDict, torch.<Type>Storage / UntypedStorage;
//   - opaque:   harmless classes found in real checkpoints (pytorch_lightning
//               and lightning callbacks, numpy scalars and dtypes, argparse
//               Namespace, torch.device/Size, builtins set/frozenset/slice,
//               _codecs.encode): REDUCE/NEWOBJ/BUILD on them yield an opaque
//               value that the state-dict reader ignores;
// anything else (os.system, builtins.eval, subprocess.*, posix.system, ...)
// is an Error "<file>: refusing to execute pickled code: os.system"; other
// torch.* names (quantized, sparse, meta tensors) are "unsupported torch object".
// Tensors are views (from_blob, kept alive by the mapping) over the archive's
// storages with size/stride/offset checked against the storage size; an
// unknown storage key, a short storage or an out-of-range view is an Error.
// Memory use is bounded by the input: no recursion, every value is owned by
// the Unpickler (cycles cannot leak).
// The legacy (pre-1.6, non-ZIP) torch.save format is rejected with an Error
// asking to re-save the file with a current torch (or as safetensors).
//
// Verified in tests/test_sd_checkpoint.cpp (Pickle*): files written by
// save_torch_zip and one written by Python torch.save (tests/data), exact
// values with fp32/fp16/bf16, strides, offsets and shared storages; malicious
// and malformed pickles.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace tweedie {

struct PyValue {
  enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Set, Global, Object, Storage, Tensor, Mark };
  Kind kind = Kind::None;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                                          // Str, Bytes; Global/Object: "module.name"
  std::vector<const PyValue*> items;                      // Tuple, List, Set; Object: its args
  std::vector<std::pair<const PyValue*, const PyValue*>> dict;  // Dict, in insertion order
  torch::Tensor tensor;                                   // Storage (flat, 1-D) and Tensor

  const PyValue* get(const std::string& key) const;  // a Str key of a Dict (nullptr if absent)
};

// Turns a storage persistent id into the flat storage tensor: called with the
// key, the dtype and the element count (memoized per key by the Unpickler).
using StorageLoader = std::function<torch::Tensor(const std::string& key, torch::ScalarType dtype, int64_t numel)>;

class Unpickler {
 public:
  // `where` names the file in errors. `data` must outlive load().
  Unpickler(std::string_view data, std::string where, StorageLoader storages);
  ~Unpickler();
  Unpickler(const Unpickler&) = delete;
  Unpickler& operator=(const Unpickler&) = delete;
  // The unpickled object; it lives as long as the Unpickler.
  const PyValue& load();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The tensors of a torch.save file (.ckpt/.pt/.pth/.bin): if the top level is
// a dict with a "state_dict" dict (Lightning / SD .ckpt), that dict; else the
// top level. Nested dicts with string keys are flattened with '.'; non-tensor
// values (ints, opaque objects, ...) are skipped. In pickle order.
std::vector<std::pair<std::string, torch::Tensor>> load_torch_file(const std::string& path);

// Write tensors as torch.save would ({name: tensor} as an OrderedDict,
// pickle protocol 2, ZIP with aligned storages), so Python's torch.load reads
// it. Tensors that share a storage are written once, with their offsets and
// strides. under_state_dict: {"state_dict": {...}} as SD .ckpt files are.
void save_torch_file(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                     bool under_state_dict = false);

}  // namespace tweedie
