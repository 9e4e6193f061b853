// libFuzzer target: JSON model configs that link without the network code:
// AutoencoderKLConfig::from_json and ClipTextConfig::from_json (the first
// input byte picks which; the rest is the JSON text).
#include "fuzz_common.h"
#include "tweedie/core/error.h"
#include "tweedie/models/autoencoder_kl.h"
#include "tweedie/models/clip_text.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    if (data[0] & 1) {
      auto c = tweedie::ClipTextConfig::from_json(text);
      (void)tweedie::ClipTextConfig::from_json(c.to_json());
    } else {
      auto c = tweedie::AutoencoderKLConfig::from_json(text);
      (void)tweedie::AutoencoderKLConfig::from_json(c.to_json());
    }
  } catch (const tweedie::Error& e) {
    fuzz::check_message(e.what());
  }
  return 0;
}
