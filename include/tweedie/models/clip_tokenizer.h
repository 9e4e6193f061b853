// CLIP's byte-level BPE tokenizer (Radford et al. 2021, openai/CLIP
// simple_tokenizer.py; the same as Hugging Face's CLIPTokenizer and OpenCLIP's
// tokenizer), as Stable Diffusion's text encoders use it.
//
// encode(text):
//   1. clean: a subset of ftfy.fix_text (ftfy itself is not used): HTML
//      entities (&amp; &lt; &gt; &quot; &apos; &#39; &nbsp; &#N; &#xH;) are
//      decoded when the text has no '<' (ftfy's "auto" rule); curly quotes
//      U+02BC, U+2018-201B -> ' and U+201C-201F -> "; Latin ligatures
//      U+FB00-FB06, U+0132/0133 spelled out; fullwidth forms U+FF01-FF5E and
//      U+3000 -> ASCII; control characters ftfy removes are removed
//      (U+0000-0008, 000B, 000E-001F, 007F, 206A-206F, FEFF, FFF9-FFFC).
//      Not done: NFC composition (decomposed accents stay two code points)
//      and ftfy's mojibake repair. (Hugging Face's slow CLIPTokenizer run
//      WITHOUT ftfy installed cleans with BERT's BasicTokenizer instead,
//      which also puts spaces around CJK ideographs, so "日本" becomes two
//      words there; with ftfy, and in OpenAI's and OpenCLIP's tokenizers, it
//      is one word, as here.)
//   2. whitespace_clean: every run of whitespace (Python's str.isspace)
//      becomes one space; leading/trailing whitespace is removed.
//   3. lower-case (Python's str.lower, see below).
//   4. pre-tokenize with CLIP's pattern, first alternative that matches at
//      each position, scanning left to right:
//        <|startoftext|> | <|endoftext|> | 's|'t|'re|'ve|'m|'ll|'d |
//        \p{L}+ | \p{N} | [^\s\p{L}\p{N}]+
//      (so every digit is its own token).
//   5. each piece's UTF-8 bytes are mapped through bytes_to_unicode (the
//      printable bytes ! .. ~, ¡ .. ¬, ® .. ÿ map to themselves, the other 68
//      to U+0100 ..), "</w>" is appended to the last symbol, and merges.txt's
//      pairs are applied lowest rank first, each pass merging every
//      non-overlapping occurrence left to right; the pieces are looked up in
//      vocab.json. Results are cached per piece.
//
// Unicode classes: \p{L}, \p{N} and lower-casing follow Python 3.11's
// Unicode 14 tables exactly for U+0000-06FF (Latin, IPA, Greek, Cyrillic,
// Armenian, Hebrew, Arabic), U+1E00-2BFF (Latin Extended Additional, Greek
// Extended, letterlike symbols, number forms, enclosed numbers), U+3000-30FF
// (kana), U+3400-4DBF and U+4E00-9FFF (CJK), U+AC00-D7A3 (Hangul) and
// U+FF00-FFEF; U+0700-1DBF and U+A000-ABFF (other alphabets) count as
// letters, digits there included; everything else (emoji, symbols, private
// use) as neither letter nor number. The one multi-character lower-case,
// U+0130 -> "i" U+0307, is applied.
//
// Files: vocab.json (a JSON object token -> id, with <|startoftext|> and
// <|endoftext|>) and merges.txt (an optional "#version" line, then one
// "a b" pair a line; at most 48,894 are used, as CLIP and Hugging Face do).
// Missing or malformed files: an Error naming the file (and line).
//
// Verified in tests/test_clip_text.cpp on the real vocabulary (ids checked
// against Hugging Face / OpenAI CLIP outputs): words, punctuation,
// apostrophes, digits, case folding, whitespace, non-ASCII letters, the
// empty prompt, decode round trips, bad files.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tweedie {

class ClipTokenizer {
 public:
  // The folder holding vocab.json and merges.txt (a model's tokenizer/).
  explicit ClipTokenizer(const std::string& folder);
  ClipTokenizer(const std::string& vocab_path, const std::string& merges_path);
  ~ClipTokenizer();
  ClipTokenizer(ClipTokenizer&&) noexcept;
  ClipTokenizer& operator=(ClipTokenizer&&) noexcept;

  // Token ids of the text, without BOS/EOS. Thread-safe.
  std::vector<int64_t> encode(const std::string& text) const;
  // The text of token ids ("</w>" becomes a space; BOS/EOS are dropped).
  std::string decode(const std::vector<int64_t>& ids) const;
  // The vocabulary entry of one id ("a</w>"), Error if out of range.
  std::string token(int64_t id) const;
  // The id of a vocabulary entry, or -1.
  int64_t id_of(const std::string& token) const;

  int64_t bos() const;  // <|startoftext|> (49406 in CLIP's vocabulary)
  int64_t eos() const;  // <|endoftext|>   (49407)
  int64_t vocab_size() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// Steps 1-3 of encode (clean, whitespace, lower-case), UTF-8 in and out.
// Invalid UTF-8 is an Error ("prompt: invalid UTF-8 at byte N").
std::string clip_normalize_text(const std::string& text);
// Step 4 on normalized text: the pieces, UTF-8.
std::vector<std::string> clip_pre_tokenize(const std::string& normalized);

// The character classes above, for the prompt parser (prompt_weighting.h).
namespace detail {
std::u32string utf8_to_u32(const std::string& s);  // Error on invalid UTF-8
std::string u32_to_utf8(const std::u32string& s);
bool unicode_letter(char32_t c);  // \p{L}
bool unicode_number(char32_t c);  // \p{N}
bool unicode_space(char32_t c);   // \s
}  // namespace detail

}  // namespace tweedie
