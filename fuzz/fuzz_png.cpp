// libFuzzer target: read_png (8-bit gray/RGB/RGBA, tEXt chunks), then the
// image as a tensor.
#include <torch/torch.h>

#include "fuzz_common.h"
#include "tweedie/core/error.h"
#include "tweedie/io/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = fuzz::write_input("png", data, size);
  try {
    tweedie::Image img = tweedie::read_png(path);
    if (img.pixels.size() != size_t(img.width) * img.height * img.channels) std::abort();
    if (img.pixels.size() <= (1 << 22) && (img.channels == 1 || img.channels == 3 || img.channels == 4))
      (void)tweedie::image_to_tensor(img);
  } catch (const tweedie::Error& e) {
    fuzz::check_message(e.what());
  }
  return 0;
}
