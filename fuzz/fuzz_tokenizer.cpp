// libFuzzer target: the CLIP BPE tokenizer on arbitrary bytes, with the real
// vocabulary (TWEEDIE_CLIP_TOKENIZER, default /work/shared/clip-tokenizer):
// normalize, pre-tokenize, encode, and decode the ids again.
#include <memory>

#include "fuzz_common.h"
#include "tweedie/core/error.h"
#include "tweedie/models/clip_tokenizer.h"

namespace {
const tweedie::ClipTokenizer& tokenizer() {
  static const std::unique_ptr<tweedie::ClipTokenizer> tok = [] {
    const char* dir = std::getenv("TWEEDIE_CLIP_TOKENIZER");
    return std::make_unique<tweedie::ClipTokenizer>(dir ? dir : "/work/shared/clip-tokenizer");
  }();
  return *tok;
}
}  // namespace

// Loaded before fuzzing starts: reading the 49,408-entry vocabulary and the merges under ASan takes seconds
// (more on a loaded machine), which -timeout would otherwise charge to the first input.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)tokenizer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const tweedie::ClipTokenizer& tok = tokenizer();
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
