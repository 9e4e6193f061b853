// libFuzzer target: the CLIP BPE tokenizer on arbitrary bytes, with the real
// vocabulary (TWEEDIE_CLIP_TOKENIZER, default /work/shared/clip-tokenizer):
// normalize, pre-tokenize, encode, and decode the ids again.
#include "fuzz_common.h"
#include "tweedie/core/error.h"
#include "tweedie/models/clip_tokenizer.h"


extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)fuzz::tokenizer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const tweedie::ClipTokenizer& tok = fuzz::tokenizer();
  try {
    const std::string norm = tweedie::clip_normalize_text(text);
    (void)tweedie::clip_pre_tokenize(norm);
  } catch (const tweedie::Error& e) {
    fuzz::check_message(e.what());
  }
  try {
    const std::vector<int64_t> ids = tok.encode(text);
    for (int64_t id : ids)
      if (id < 0 || id >= tok.vocab_size()) std::abort();
    (void)tok.decode(ids);
  } catch (const tweedie::Error& e) {
    fuzz::check_message(e.what());
  }
  return 0;
}
