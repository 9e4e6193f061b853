// libFuzzer target: A1111 prompt weighting: parse_prompt_attention, then
// chunk_prompt with the real CLIP tokenizer (TWEEDIE_CLIP_TOKENIZER, default
// /work/shared/clip-tokenizer) and the 77-token windows.
#include <torch/torch.h>

#include <memory>

#include "fuzz_common.h"
#include "tweedie/core/error.h"
#include "tweedie/models/prompt_weighting.h"

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
  // The first byte picks the options, the rest is the prompt.
  const uint8_t flags = size ? data[0] : 0;
  const std::string prompt = size ? std::string(reinterpret_cast<const char*>(data) + 1, size - 1) : std::string();
  try {
    for (auto& w : tweedie::parse_prompt_attention(prompt))
      if (w.text.empty() && !w.is_break) (void)0;
  } catch (const tweedie::Error& e) {
    fuzz::check_message(e.what());
  }
  try {
    const tweedie::ClipTokenizer& tok = tokenizer();
    tweedie::ChunkOptions opt;
    opt.emphasis = !(flags & 1);
    opt.comma_backtrack = (flags >> 1) & 31;
    auto chunks = tweedie::chunk_prompt(tok, prompt, opt);
    for (auto& c : chunks)
      if (c.tokens.size() > size_t(tweedie::kClipChunkTokens) || c.tokens.size() != c.weights.size()) std::abort();
    auto w = tweedie::prompt_windows(chunks, tok.bos(), tok.eos(), (flags & 64) ? 0 : tok.eos());
    if (w.ids.size(1) != tweedie::kClipContext) std::abort();
  } catch (const tweedie::Error& e) {
    fuzz::check_message(e.what());
  }
  return 0;
}
