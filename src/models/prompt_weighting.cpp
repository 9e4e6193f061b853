// A1111 prompt weighting: parse_prompt_attention, tokenize_line's chunking
// with comma backtracking, 77-token windows and the "Original" emphasis (see
// include/tweedie/models/prompt_weighting.h). Verified in
// tests/test_clip_text.cpp against A1111's doctest outputs.
#include "tweedie/models/prompt_weighting.h"

#include <cstdlib>

#include "tweedie/core/error.h"

namespace tweedie {

namespace {

using detail::u32_to_utf8;

bool is_word(char32_t c) { return c == U'_' || detail::unicode_letter(c) || detail::unicode_number(c); }
bool is_ascii_digit(char32_t c) { return c >= U'0' && c <= U'9'; }

// re.split(r"\s*\bBREAK\b\s*", s): the parts between BREAK words.
std::vector<std::u32string> split_break(const std::u32string& s) {
  static const std::u32string kBreak = U"BREAK";
  std::vector<std::u32string> parts;
  size_t from = 0, search = 0;
  while (true) {
    size_t p = s.find(kBreak, search);
    if (p == std::u32string::npos) break;
    const size_t e = p + kBreak.size();
    if ((p > 0 && is_word(s[p - 1])) || (e < s.size() && is_word(s[e]))) {
      search = p + 1;
      continue;
    }
    size_t start = p, end = e;
    while (start > from && detail::unicode_space(s[start - 1])) --start;
    while (end < s.size() && detail::unicode_space(s[end])) ++end;
    parts.push_back(s.substr(from, start - from));
    from = search = end;
  }
  parts.push_back(s.substr(from));
  return parts;
}

// float() of a [+-]?[.\d]+ match; Python raises on "." or "1.2.3", so do we.
double parse_weight(const std::u32string& num, const std::u32string& match) {
  const std::string s = u32_to_utf8(num);
  char* end = nullptr;
  const double w = std::strtod(s.c_str(), &end);
  check(end == s.c_str() + s.size() && s.find_first_of("0123456789") != std::string::npos, "prompt: weight '", s,
        "' in '", u32_to_utf8(match), "' is not a number");
  return w;
}

}  // namespace

std::vector<WeightedText> parse_prompt_attention(const std::string& prompt) {
  const std::u32string t = detail::utf8_to_u32(prompt);
  const size_t n = t.size();
  std::vector<WeightedText> res;
  std::vector<size_t> round, square;
  auto multiply = [&](size_t from, double m) {
    for (size_t p = from; p < res.size(); ++p)
      if (!res[p].is_break) res[p].weight *= m;
  };
  auto add_text = [&](const std::u32string& s) {
    auto parts = split_break(s);
    for (size_t i = 0; i < parts.size(); ++i) {
      if (i > 0) res.push_back({"BREAK", -1.0, true});
      res.push_back({u32_to_utf8(parts[i]), 1.0, false});
    }
  };
  auto special = [](char32_t c) { return c == U'\\' || c == U'(' || c == U')' || c == U'[' || c == U']' || c == U':'; };
  const double round_mult = 1.1, square_mult = 1 / 1.1;

  size_t i = 0;
  while (i < n) {
    const char32_t c = t[i];
    if (c == U'\\') {  // \( \) \[ \] \\ are literal; a lone backslash is dropped
      const bool escaped = i + 1 < n && (t[i + 1] == U'(' || t[i + 1] == U')' || t[i + 1] == U'[' ||
                                         t[i + 1] == U']' || t[i + 1] == U'\\');
      res.push_back({escaped ? u32_to_utf8(t.substr(i + 1, 1)) : std::string(), 1.0, false});
      i += escaped ? 2 : 1;
    } else if (c == U'(') {
      round.push_back(res.size());
      ++i;
    } else if (c == U'[') {
      square.push_back(res.size());
      ++i;
    } else if (c == U':') {
      // ":\s*([+-]?[.\d]+)\s*\)"
      size_t j = i + 1;
      while (j < n && detail::unicode_space(t[j])) ++j;
      const size_t num0 = j;
      if (j < n && (t[j] == U'+' || t[j] == U'-')) ++j;
      const size_t digits0 = j;
      while (j < n && (t[j] == U'.' || is_ascii_digit(t[j]))) ++j;
      const size_t num1 = j;
      while (j < n && detail::unicode_space(t[j])) ++j;
      if (num1 > digits0 && j < n && t[j] == U')') {
        const std::u32string match = t.substr(i, j + 1 - i);
        if (!round.empty()) {
          multiply(round.back(), parse_weight(t.substr(num0, num1 - num0), match));
          round.pop_back();
        } else {
          add_text(match);
        }
        i = j + 1;
      } else {
        add_text(U":");
        ++i;
      }
    } else if (c == U')' && !round.empty()) {
      multiply(round.back(), round_mult);
      round.pop_back();
      ++i;
    } else if (c == U']' && !square.empty()) {
      multiply(square.back(), square_mult);
      square.pop_back();
      ++i;
    } else if (c == U')' || c == U']') {
      add_text(std::u32string(1, c));
      ++i;
    } else {
      size_t j = i;
      while (j < n && !special(t[j])) ++j;
      add_text(t.substr(i, j - i));
      i = j;
    }
  }
  for (size_t pos : round) multiply(pos, round_mult);
  for (size_t pos : square) multiply(pos, square_mult);
  if (res.empty()) res.push_back({"", 1.0, false});

  // Merge runs of identical weights.
  std::vector<WeightedText> merged;
  for (auto& r : res) {
    if (!merged.empty() && !r.is_break && !merged.back().is_break && merged.back().weight == r.weight)
      merged.back().text += r.text;
    else
      merged.push_back(std::move(r));
  }
  return merged;
}

namespace {
// The words of a text split at ASCII whitespace.
std::vector<std::string> whitespace_words(const std::string& text) {
  std::vector<std::string> words;
  std::string w;
  for (char ch : text) {
    if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v') {
      if (!w.empty()) words.push_back(std::move(w)), w.clear();
    } else {
      w += ch;
    }
  }
  if (!w.empty()) words.push_back(std::move(w));
  return words;
}
}  // namespace

std::vector<PromptChunk> chunk_prompt(const ClipTokenizer& tok, const std::string& prompt, const ChunkOptions& opt) {
  check(opt.comma_backtrack >= 0 && opt.comma_backtrack <= kClipChunkTokens,
        "prompt: comma backtrack must be in [0, 75], got ", opt.comma_backtrack);
  const auto parsed = opt.emphasis ? parse_prompt_attention(prompt) : std::vector<WeightedText>{{prompt, 1.0, false}};
  const int64_t comma = tok.id_of(",</w>");
  std::vector<PromptChunk> chunks;
  PromptChunk cur;
  int64_t last_comma = -1;
  auto next_chunk = [&] {
    chunks.push_back(std::move(cur));
    cur = PromptChunk();
    last_comma = -1;
  };
  int64_t word = 0;  // index of the next word (prompt_word_positions)
  for (const auto& piece : parsed) {
    if (piece.is_break) {
      next_chunk();
      continue;
    }
    const std::vector<int64_t> tokens = tok.encode(piece.text);
    // The word of each token: the piece's whitespace-separated words encoded one by one (CLIP's
    // pre-tokenizer never joins across whitespace, so they give the same tokens; if normalization
    // made them differ, the piece's tokens get no word).
    std::vector<int64_t> words;
    for (const std::string& w : whitespace_words(piece.text)) {
      for (size_t k = tok.encode(w).size(); k > 0; --k) words.push_back(word);
      ++word;
    }
    if (words.size() != tokens.size()) words.assign(tokens.size(), -1);
    for (size_t i = 0; i < tokens.size(); ++i) {
      const int64_t t = tokens[i];
      const int64_t len = int64_t(cur.tokens.size());
      if (t == comma) {
        last_comma = len;
      } else if (opt.comma_backtrack > 0 && len == kClipChunkTokens && last_comma != -1 &&
                 len - last_comma <= opt.comma_backtrack) {
        // Move the words after the last comma into the next chunk.
        PromptChunk moved;
        moved.tokens.assign(cur.tokens.begin() + last_comma + 1, cur.tokens.end());
        moved.weights.assign(cur.weights.begin() + last_comma + 1, cur.weights.end());
        moved.words.assign(cur.words.begin() + last_comma + 1, cur.words.end());
        cur.tokens.resize(size_t(last_comma + 1));
        cur.weights.resize(size_t(last_comma + 1));
        cur.words.resize(size_t(last_comma + 1));
        next_chunk();
        cur = std::move(moved);
      }
      if (int64_t(cur.tokens.size()) == kClipChunkTokens) next_chunk();
      cur.tokens.push_back(t);
      cur.weights.push_back(piece.weight);
      cur.words.push_back(words[i]);
    }
  }
  if (!cur.tokens.empty() || chunks.empty()) next_chunk();
  return chunks;
}

std::vector<PromptWord> prompt_word_positions(const ClipTokenizer& tok, const std::string& prompt,
                                              const ChunkOptions& opt) {
  const auto parsed = opt.emphasis ? parse_prompt_attention(prompt) : std::vector<WeightedText>{{prompt, 1.0, false}};
  std::vector<PromptWord> out;
  for (const auto& piece : parsed)
    if (!piece.is_break)
      for (const std::string& w : whitespace_words(piece.text)) out.push_back({w, {}});
  const auto chunks = chunk_prompt(tok, prompt, opt);
  for (size_t c = 0; c < chunks.size(); ++c)
    for (size_t j = 0; j < chunks[c].words.size(); ++j) {
      const int64_t w = chunks[c].words[j];
      if (w >= 0 && w < int64_t(out.size())) out[size_t(w)].positions.push_back(int64_t(c) * kClipContext + 1 + int64_t(j));
    }
  return out;
}

PromptWindows prompt_windows(const std::vector<PromptChunk>& chunks, int64_t bos, int64_t eos, int64_t pad) {
  const int64_t k = int64_t(chunks.size());
  check(k > 0, "prompt: no chunks to encode");
  auto ids = torch::full({k, kClipContext}, pad, torch::kInt64);
  auto w = torch::ones({k, kClipContext}, torch::kFloat32);
  auto ia = ids.accessor<int64_t, 2>();
  auto wa = w.accessor<float, 2>();
  for (int64_t c = 0; c < k; ++c) {
    const auto& ch = chunks[size_t(c)];
    const int64_t n = int64_t(ch.tokens.size());
    check(n <= kClipChunkTokens && ch.weights.size() == ch.tokens.size(), "prompt: chunk ", c, " has ", n,
          " tokens and ", ch.weights.size(), " weights (at most 75 each, as many weights as tokens)");
    ia[c][0] = bos;
    for (int64_t j = 0; j < n; ++j) {
      ia[c][j + 1] = ch.tokens[size_t(j)];
      wa[c][j + 1] = float(ch.weights[size_t(j)]);
    }
    ia[c][n + 1] = eos;
  }
  return {ids, w};
}

torch::Tensor apply_emphasis(const torch::Tensor& z, const torch::Tensor& weights, bool normalize) {
  check(z.dim() == 3 && weights.dim() == 2 && weights.size(0) == z.size(0) && weights.size(1) == z.size(1),
        "emphasis: hidden states ", z.sizes(), " and weights ", weights.sizes(), " do not match ([k, L, D] and [k, L])");
  auto w = weights.to(z.device(), torch::kFloat32);
  if (w.eq(1).all().item<bool>()) return z;
  auto zf = z.to(torch::kFloat32);
  auto weighted = zf * w.unsqueeze(-1);
  if (normalize) {
    // Per chunk: scale so the mean over [L, D] is the unweighted one.
    auto before = zf.mean({1, 2}, /*keepdim=*/true);
    auto after = weighted.mean({1, 2}, /*keepdim=*/true);
    weighted = weighted * torch::where(after.eq(0), torch::ones_like(after), before / after);
  }
  return weighted.to(z.scalar_type());
}

}  // namespace tweedie
