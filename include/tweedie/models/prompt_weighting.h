// Prompt weighting and long prompts as AUTOMATIC1111's stable-diffusion-webui
// does them (modules/prompt_parser.py parse_prompt_attention,
// modules/sd_hijack_clip.py tokenize_line, modules/sd_emphasis.py "Original").
//
// Syntax: "(text)" multiplies the weight of text by 1.1, "[text]" divides it
// by 1.1, "(text:1.3)" multiplies it by 1.3 (spaces allowed around the
// number), nesting multiplies; "\(" "\)" "\[" "\]" "\\" are literal
// characters and a lone "\" is dropped; an unclosed "(" or "[" applies to the
// end of the prompt; an unmatched ")" or "]" and a ":" outside "(...:w)" are
// plain text. "BREAK" as a whole word (uppercase) ends the current chunk.
// Adjacent pieces of equal weight are merged into one before tokenizing (so
// "(a)(b)" is the text "ab" at 1.1). One deviation from A1111: a BREAK
// inside brackets still breaks (A1111 multiplies its marker weight, which
// turns it into the word "break" with a negative weight). Weights are
// computed in double in A1111's order, so they match its values exactly
// (e.g. 1.3 * 1.1 * 1.1 = 1.5730000000000004). A weight that is not a
// number (":1.2.3)") is an Error; digits are ASCII only.
//
// Chunks: the pieces' tokens are laid into chunks of at most 75 tokens;
// BREAK starts a new chunk (even an empty one); when a chunk is full and a
// comma was among its last `comma_backtrack` tokens (A1111's default 20), the
// tokens after that comma move to the next chunk. An empty prompt is one
// empty chunk. Each chunk becomes a 77-token window [BOS, tokens, EOS, pad...]
// whose BOS/EOS/pad weights are 1. SD1's CLIP pads with EOS (49407), the
// OpenCLIP encoders of SD2 and SDXL with 0: the pad id is a parameter.
//
// Emphasis ("Original"): the encoder's hidden states z [77, D] of each chunk
// are multiplied by the token weights, then rescaled so that the mean of
// the result equals the mean of z before weighting (per chunk). Chunks are
// encoded separately and concatenated along the sequence: [1, 77k, D].
//
// Verified in tests/test_clip_text.cpp: A1111's own doctest outputs, escapes,
// unbalanced brackets, BREAK, comma backtracking, 3 chunks for 200 words,
// window layout for both pad ids, mean restoration.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "tweedie/models/clip_tokenizer.h"

namespace tweedie {

constexpr int64_t kClipChunkTokens = 75;  // prompt tokens in one window
constexpr int64_t kClipContext = 77;      // window length with BOS and EOS

struct WeightedText {
  std::string text;
  double weight = 1.0;
  bool is_break = false;  // a BREAK marker (text "BREAK", weight -1 as in A1111)
};

// parse_prompt_attention: the prompt as pieces of text with weights.
std::vector<WeightedText> parse_prompt_attention(const std::string& prompt);

struct PromptChunk {
  std::vector<int64_t> tokens;  // at most 75, no BOS/EOS
  std::vector<double> weights;  // one per token
  std::vector<int64_t> words;   // one per token: the prompt word it came from (prompt_word_positions), -1 if unknown
};

struct ChunkOptions {
  bool emphasis = true;     // false: the prompt is plain text (no brackets, no BREAK)
  int comma_backtrack = 20;  // 0 disables
};

// tokenize_line: the prompt as chunks of at most 75 weighted tokens.
std::vector<PromptChunk> chunk_prompt(const ClipTokenizer& tok, const std::string& prompt, const ChunkOptions& opt = {});

// The words of a prompt (the whitespace-separated words of its parsed text,
// brackets and weights removed, in order; BREAK is no word) and the
// positions of their tokens in the encoded context [1, 77k, D]: token j of
// chunk c sits at c * 77 + 1 + j. What an attention controller needs to
// pick a word's cross-attention columns (Prompt-to-Prompt's word indices).
struct PromptWord {
  std::string text;
  std::vector<int64_t> positions;
};
std::vector<PromptWord> prompt_word_positions(const ClipTokenizer& tok, const std::string& prompt,
                                              const ChunkOptions& opt = {});

struct PromptWindows {
  torch::Tensor ids;      // [k, 77] int64: BOS, tokens, EOS, pad...
  torch::Tensor weights;  // [k, 77] float32, 1 at BOS, EOS and pad
};

PromptWindows prompt_windows(const std::vector<PromptChunk>& chunks, int64_t bos, int64_t eos, int64_t pad);

// Emphasis on hidden states z [k, 77, D] with weights [k, 77]: z * w, then
// rescaled per chunk to z's mean (normalize = false: A1111's "No norm").
// Computed in float32, returned in z's dtype; all-ones weights return z.
torch::Tensor apply_emphasis(const torch::Tensor& z, const torch::Tensor& weights, bool normalize = true);

}  // namespace tweedie
