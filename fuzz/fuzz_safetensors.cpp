// libFuzzer target: safetensors files through load_safetensors, and the
// format detection + state-dict loader every weights file goes through
// (detect_weights_format, load_state_dict; a ZIP input reaches the torch.save
// reader). Tensors are read back (cloned) so that a view past its bytes shows.
#include <torch/torch.h>

#include "fuzz_common.h"
#include "tweedie/core/error.h"
#include "tweedie/io/safetensors.h"
#include "tweedie/io/state_dict.h"

namespace {

void touch(const torch::Tensor& t) {
  if (t.defined() && t.numel() <= (1 << 20)) (void)t.clone();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = fuzz::write_input("safetensors", data, size);
  try {
    tweedie::SafeTensors st = tweedie::load_safetensors(path);
    for (auto& [name, t] : st.tensors) {
      touch(t);
      if (st.find(name) == nullptr) std::abort();
    }
  } catch (const tweedie::Error& e) {
    fuzz::check_message(e.what());
  }
  try {
    (void)tweedie::detect_weights_format(path);
    tweedie::LoadOptions opts;
    if (size && (data[size - 1] & 1)) opts.dtype = torch::kFloat16;
    std::map<std::string, std::string> meta;
    tweedie::StateDict sd = tweedie::load_state_dict(path, opts, &meta);
    for (auto& [name, t] : sd) touch(t);
  } catch (const tweedie::Error& e) {
    fuzz::check_message(e.what());
  }
  return 0;
}
