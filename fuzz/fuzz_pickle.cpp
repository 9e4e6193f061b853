// libFuzzer target: the safe unpickler.
//   input starting "PK": a torch.save ZIP, through load_torch_file;
//   otherwise: the bytes are a pickle, unpickled directly with a storage
//   loader that makes zero storages of the asked size (up to 1M elements).
#include <torch/torch.h>

#include "fuzz_common.h"
#include "tweedie/core/error.h"
#include "tweedie/io/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size >= 2 && data[0] == 'P' && data[1] == 'K') {
    const std::string& path = fuzz::write_input("pickle", data, size);
    try {
      auto tensors = tweedie::load_torch_file(path);
      for (auto& [name, t] : tensors)
        if (t.numel() <= (1 << 20)) (void)t.clone();
    } catch (const tweedie::Error& e) {
      fuzz::check_message(e.what());
    }
    return 0;
  }
  try {
    auto loader = [](const std::string& key, torch::ScalarType dtype, int64_t numel) {
      if (numel < 0 || numel > (1 << 20)) tweedie::fail("fuzz: storage '", key, "' of ", numel, " elements");
      return torch::zeros({numel}, torch::TensorOptions().dtype(dtype));
    };
    tweedie::Unpickler u(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.pkl", loader);
    const tweedie::PyValue& v = u.load();
    (void)v.get("state_dict");
  } catch (const tweedie::Error& e) {
    fuzz::check_message(e.what());
  }
  return 0;
}
