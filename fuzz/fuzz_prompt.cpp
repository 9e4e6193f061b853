// libFuzzer target: A1111 prompt weighting: parse_prompt_attention, then
// chunk_prompt with the real CLIP tokenizer (TWEEDIE_CLIP_TOKENIZER, default
// /work/shared/clip-tokenizer) and the 77-token windows.
#include <torch/torch.h>

#include "fuzz_common.h"
#include "tweedie/core/error.h"
#include "tweedie/models/prompt_weighting.h"


extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)fuzz::tokenizer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The first byte picks the options, the rest is the prompt.
  const uint8_t flags = size ? data[0] : 0;
  const std::string prompt = size ? std::string(reinterpret_cast<const char*>(data) + 1, size - 1) : std::string();
  try {
    (void)tweedie::parse_prompt_attention(prompt);
  } catch (const tweedie::Error& e) {
    fuzz::check_message(e.what());
  }
  try {
    const tweedie::ClipTokenizer& tok = fuzz::tokenizer();
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
