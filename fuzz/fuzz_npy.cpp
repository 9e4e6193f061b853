// libFuzzer target: load_npy (.npy 1.0/2.0, float32/64/16, int64/32).
#include <torch/torch.h>

#include "fuzz_common.h"
#include "tweedie/core/error.h"
#include "tweedie/io/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = fuzz::write_input("npy", data, size);
  try {
    torch::Tensor t = tweedie::load_npy(path);
    if (t.numel() <= (1 << 20)) (void)t.sum();
  } catch (const tweedie::Error& e) {
    fuzz::check_message(e.what());
  }
  return 0;
}
