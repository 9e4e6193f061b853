// CLIP byte-level BPE tokenizer: cleaning, lower-casing, CLIP's pre-tokenizer
// pattern, bytes_to_unicode and merge ranks (see
// include/tweedie/models/clip_tokenizer.h for the steps and the Unicode
// coverage). Verified in tests/test_clip_text.cpp on the real vocabulary.
#include "tweedie/models/clip_tokenizer.h"

#include <algorithm>
#include <array>
#include <climits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"

namespace tweedie {

namespace {

// ---------------------------------------------------------------- UTF-8

std::u32string utf8_decode(const std::string& s) {
  static const char32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    const int n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    check(n > 0 && i + n <= s.size(), "prompt: invalid UTF-8 at byte ", i);
    char32_t cp = n == 1 ? c : c & (0x7F >> n);
    for (int k = 1; k < n; ++k) {
      const unsigned char d = s[i + k];
      check((d & 0xC0) == 0x80, "prompt: invalid UTF-8 at byte ", i);
      cp = (cp << 6) | (d & 0x3F);
    }
    check(cp >= kMin[n] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF), "prompt: invalid UTF-8 at byte ", i);
    out.push_back(cp);
    i += n;
  }
  return out;
}

void utf8_append(std::string& o, char32_t c) {
  if (c < 0x80) {
    o += char(c);
  } else if (c < 0x800) {
    o += char(0xC0 | (c >> 6));
    o += char(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    o += char(0xE0 | (c >> 12));
    o += char(0x80 | ((c >> 6) & 0x3F));
    o += char(0x80 | (c & 0x3F));
  } else {
    o += char(0xF0 | (c >> 18));
    o += char(0x80 | ((c >> 12) & 0x3F));
    o += char(0x80 | ((c >> 6) & 0x3F));
    o += char(0x80 | (c & 0x3F));
  }
}

std::string utf8_encode(const std::u32string& s) {
  std::string o;
  o.reserve(s.size());
  for (char32_t c : s) utf8_append(o, c);
  return o;
}

// ---------------------------------------------------------------- Unicode classes

// Generated from Python 3.11's unicodedata (Unicode 14) for the blocks named
// in the header: \p{L} and \p{N} as inclusive ranges, and str.lower() as
// runs {first, last, stride, delta}: first, first + stride, ... last map to
// code point + delta.
struct Range {
  char32_t lo, hi;
};
struct CaseRun {
  char32_t lo, hi;
  int stride, delta;
};
constexpr Range kLetters[] = {
    {0x41, 0x5a}, {0x61, 0x7a}, {0xaa, 0xaa}, {0xb5, 0xb5}, {0xba, 0xba}, {0xc0, 0xd6}, {0xd8, 0xf6}, {0xf8,
    0x2c1}, {0x2c6, 0x2d1}, {0x2e0, 0x2e4}, {0x2ec, 0x2ec}, {0x2ee, 0x2ee}, {0x370, 0x374}, {0x376, 0x377},
    {0x37a, 0x37d}, {0x37f, 0x37f}, {0x386, 0x386}, {0x388, 0x38a}, {0x38c, 0x38c}, {0x38e, 0x3a1}, {0x3a3,
    0x3f5}, {0x3f7, 0x481}, {0x48a, 0x52f}, {0x531, 0x556}, {0x559, 0x559}, {0x560, 0x588}, {0x5d0, 0x5ea},
    {0x5ef, 0x5f2}, {0x620, 0x64a}, {0x66e, 0x66f}, {0x671, 0x6d3}, {0x6d5, 0x6d5}, {0x6e5, 0x6e6}, {0x6ee,
    0x6ef}, {0x6fa, 0x6fc}, {0x6ff, 0x6ff}, {0x1e00, 0x1f15}, {0x1f18, 0x1f1d}, {0x1f20, 0x1f45}, {0x1f48,
    0x1f4d}, {0x1f50, 0x1f57}, {0x1f59, 0x1f59}, {0x1f5b, 0x1f5b}, {0x1f5d, 0x1f5d}, {0x1f5f, 0x1f7d}, {0x1f80,
    0x1fb4}, {0x1fb6, 0x1fbc}, {0x1fbe, 0x1fbe}, {0x1fc2, 0x1fc4}, {0x1fc6, 0x1fcc}, {0x1fd0, 0x1fd3}, {0x1fd6,
    0x1fdb}, {0x1fe0, 0x1fec}, {0x1ff2, 0x1ff4}, {0x1ff6, 0x1ffc}, {0x2071, 0x2071}, {0x207f, 0x207f}, {0x2090,
    0x209c}, {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210a, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211d}, {0x2124,
    0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212a, 0x212d}, {0x212f, 0x2139}, {0x213c, 0x213f}, {0x2145,
    0x2149}, {0x214e, 0x214e}, {0x2183, 0x2184}, {0x3005, 0x3006}, {0x3031, 0x3035}, {0x303b, 0x303c}, {0x3041,
    0x3096}, {0x309d, 0x309f}, {0x30a1, 0x30fa}, {0x30fc, 0x30ff}, {0x3105, 0x312f}, {0x3131, 0x318e}, {0x31a0,
    0x31bf}, {0x31f0, 0x31ff}, {0x3400, 0x4dbf}, {0x4e00, 0x9fff}, {0xac00, 0xd7a3}, {0xf900, 0xfa6d}, {0xfa70,
    0xfad9}, {0xff21, 0xff3a}, {0xff41, 0xff5a}, {0xff66, 0xffbe}, {0xffc2, 0xffc7}, {0xffca, 0xffcf}, {0xffd2,
    0xffd7}, {0xffda, 0xffdc}
};
constexpr Range kNumbers[] = {
    {0x30, 0x39}, {0xb2, 0xb3}, {0xb9, 0xb9}, {0xbc, 0xbe}, {0x660, 0x669}, {0x6f0, 0x6f9}, {0x2070, 0x2070},
    {0x2074, 0x2079}, {0x2080, 0x2089}, {0x2150, 0x2182}, {0x2185, 0x2189}, {0x2460, 0x249b}, {0x24ea, 0x24ff},
    {0x2776, 0x2793}, {0x3007, 0x3007}, {0x3021, 0x3029}, {0x3038, 0x303a}, {0x3192, 0x3195}, {0x3220, 0x3229},
    {0x3248, 0x324f}, {0x3251, 0x325f}, {0x3280, 0x3289}, {0x32b1, 0x32bf}, {0xff10, 0xff19}
};
constexpr CaseRun kLower[] = {
    {0x41, 0x5a, 1, 32}, {0xc0, 0xd6, 1, 32}, {0xd8, 0xde, 1, 32}, {0x100, 0x12e, 2, 1}, {0x132, 0x136, 2, 1},
    {0x139, 0x147, 2, 1}, {0x14a, 0x176, 2, 1}, {0x178, 0x178, 1, -121}, {0x179, 0x17d, 2, 1}, {0x181, 0x181, 1,
    210}, {0x182, 0x184, 2, 1}, {0x186, 0x186, 1, 206}, {0x187, 0x187, 1, 1}, {0x189, 0x18a, 1, 205}, {0x18b,
    0x18b, 1, 1}, {0x18e, 0x18e, 1, 79}, {0x18f, 0x18f, 1, 202}, {0x190, 0x190, 1, 203}, {0x191, 0x191, 1, 1},
    {0x193, 0x193, 1, 205}, {0x194, 0x194, 1, 207}, {0x196, 0x196, 1, 211}, {0x197, 0x197, 1, 209}, {0x198,
    0x198, 1, 1}, {0x19c, 0x19c, 1, 211}, {0x19d, 0x19d, 1, 213}, {0x19f, 0x19f, 1, 214}, {0x1a0, 0x1a4, 2, 1},
    {0x1a6, 0x1a6, 1, 218}, {0x1a7, 0x1a7, 1, 1}, {0x1a9, 0x1a9, 1, 218}, {0x1ac, 0x1ac, 1, 1}, {0x1ae, 0x1ae, 1,
    218}, {0x1af, 0x1af, 1, 1}, {0x1b1, 0x1b2, 1, 217}, {0x1b3, 0x1b5, 2, 1}, {0x1b7, 0x1b7, 1, 219}, {0x1b8,
    0x1b8, 1, 1}, {0x1bc, 0x1bc, 1, 1}, {0x1c4, 0x1c4, 1, 2}, {0x1c5, 0x1c5, 1, 1}, {0x1c7, 0x1c7, 1, 2}, {0x1c8,
    0x1c8, 1, 1}, {0x1ca, 0x1ca, 1, 2}, {0x1cb, 0x1db, 2, 1}, {0x1de, 0x1ee, 2, 1}, {0x1f1, 0x1f1, 1, 2}, {0x1f2,
    0x1f4, 2, 1}, {0x1f6, 0x1f6, 1, -97}, {0x1f7, 0x1f7, 1, -56}, {0x1f8, 0x21e, 2, 1}, {0x220, 0x220, 1, -130},
    {0x222, 0x232, 2, 1}, {0x23a, 0x23a, 1, 10795}, {0x23b, 0x23b, 1, 1}, {0x23d, 0x23d, 1, -163}, {0x23e, 0x23e,
    1, 10792}, {0x241, 0x241, 1, 1}, {0x243, 0x243, 1, -195}, {0x244, 0x244, 1, 69}, {0x245, 0x245, 1, 71},
    {0x246, 0x24e, 2, 1}, {0x370, 0x372, 2, 1}, {0x376, 0x376, 1, 1}, {0x37f, 0x37f, 1, 116}, {0x386, 0x386, 1,
    38}, {0x388, 0x38a, 1, 37}, {0x38c, 0x38c, 1, 64}, {0x38e, 0x38f, 1, 63}, {0x391, 0x3a1, 1, 32}, {0x3a3,
    0x3ab, 1, 32}, {0x3cf, 0x3cf, 1, 8}, {0x3d8, 0x3ee, 2, 1}, {0x3f4, 0x3f4, 1, -60}, {0x3f7, 0x3f7, 1, 1},
    {0x3f9, 0x3f9, 1, -7}, {0x3fa, 0x3fa, 1, 1}, {0x3fd, 0x3ff, 1, -130}, {0x400, 0x40f, 1, 80}, {0x410, 0x42f,
    1, 32}, {0x460, 0x480, 2, 1}, {0x48a, 0x4be, 2, 1}, {0x4c0, 0x4c0, 1, 15}, {0x4c1, 0x4cd, 2, 1}, {0x4d0,
    0x52e, 2, 1}, {0x531, 0x556, 1, 48}, {0x1e00, 0x1e94, 2, 1}, {0x1e9e, 0x1e9e, 1, -7615}, {0x1ea0, 0x1efe, 2,
    1}, {0x1f08, 0x1f0f, 1, -8}, {0x1f18, 0x1f1d, 1, -8}, {0x1f28, 0x1f2f, 1, -8}, {0x1f38, 0x1f3f, 1, -8},
    {0x1f48, 0x1f4d, 1, -8}, {0x1f59, 0x1f5f, 2, -8}, {0x1f68, 0x1f6f, 1, -8}, {0x1f88, 0x1f8f, 1, -8}, {0x1f98,
    0x1f9f, 1, -8}, {0x1fa8, 0x1faf, 1, -8}, {0x1fb8, 0x1fb9, 1, -8}, {0x1fba, 0x1fbb, 1, -74}, {0x1fbc, 0x1fbc,
    1, -9}, {0x1fc8, 0x1fcb, 1, -86}, {0x1fcc, 0x1fcc, 1, -9}, {0x1fd8, 0x1fd9, 1, -8}, {0x1fda, 0x1fdb, 1,
    -100}, {0x1fe8, 0x1fe9, 1, -8}, {0x1fea, 0x1feb, 1, -112}, {0x1fec, 0x1fec, 1, -7}, {0x1ff8, 0x1ff9, 1,
    -128}, {0x1ffa, 0x1ffb, 1, -126}, {0x1ffc, 0x1ffc, 1, -9}, {0x2126, 0x2126, 1, -7517}, {0x212a, 0x212a, 1,
    -8383}, {0x212b, 0x212b, 1, -8262}, {0x2132, 0x2132, 1, 28}, {0x2160, 0x216f, 1, 16}, {0x2183, 0x2183, 1, 1},
    {0x24b6, 0x24cf, 1, 26}, {0xff21, 0xff3a, 1, 32}
};

bool in_ranges(const Range* b, const Range* e, char32_t c) {
  const Range* it = std::upper_bound(b, e, c, [](char32_t v, const Range& r) { return v < r.lo; });
  return it != b && c <= (it - 1)->hi;
}

bool is_letter(char32_t c) {
  if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
  // Approximations outside the generated blocks: other alphabets and CJK
  // extensions are letters.
  if ((c >= 0x700 && c <= 0x1DBF) || (c >= 0xA000 && c <= 0xABFF) || (c >= 0x20000 && c <= 0x3134F)) return true;
  return in_ranges(std::begin(kLetters), std::end(kLetters), c);
}

bool is_number(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return in_ranges(std::begin(kNumbers), std::end(kNumbers), c);
}

// \s of Python's regex module (Unicode White_Space).
bool is_space(char32_t c) {
  return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

void append_lower(std::u32string& o, char32_t c) {
  if (c == 0x130) {  // İ -> i + combining dot above, as Python does
    o += U"i\u0307";
    return;
  }
  const CaseRun* b = std::begin(kLower);
  const CaseRun* it = std::upper_bound(b, std::end(kLower), c, [](char32_t v, const CaseRun& r) { return v < r.lo; });
  if (it != b) {
    const CaseRun& r = *(it - 1);
    if (c <= r.hi && (c - r.lo) % r.stride == 0) c = char32_t(int64_t(c) + r.delta);
  }
  o += c;
}

// ---------------------------------------------------------------- cleaning (ftfy subset)

bool starts_with_at(const std::u32string& s, size_t i, const std::u32string& p) { return s.compare(i, p.size(), p) == 0; }

// HTML character references, as html.unescape for the common named ones and
// every numeric one; anything else is left as it is.
std::u32string unescape_html(const std::u32string& s) {
  static const std::pair<std::u32string, char32_t> kNamed[] = {
      {U"&amp;", U'&'}, {U"&lt;", U'<'}, {U"&gt;", U'>'}, {U"&quot;", U'"'}, {U"&apos;", U'\''}, {U"&nbsp;", 0xA0}};
  std::u32string o;
  for (size_t i = 0; i < s.size();) {
    if (s[i] != U'&') {
      o += s[i++];
      continue;
    }
    bool done = false;
    for (auto& [name, c] : kNamed)
      if (starts_with_at(s, i, name)) {
        o += c;
        i += name.size();
        done = true;
        break;
      }
    if (!done && i + 2 < s.size() && s[i + 1] == U'#') {
      const bool hex = s[i + 2] == U'x' || s[i + 2] == U'X';
      size_t j = i + (hex ? 3 : 2);
      uint32_t v = 0;
      const size_t d0 = j;
      for (; j < s.size() && j - d0 < 8; ++j) {
        const char32_t d = s[j];
        if (d >= U'0' && d <= U'9') v = v * (hex ? 16 : 10) + (d - U'0');
        else if (hex && (d | 0x20) >= U'a' && (d | 0x20) <= U'f') v = v * 16 + ((d | 0x20) - U'a' + 10);
        else break;
      }
      if (j > d0 && j < s.size() && s[j] == U';') {
        o += (v == 0 || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) ? char32_t(0xFFFD) : char32_t(v);
        i = j + 1;
        done = true;
      }
    }
    if (!done) o += s[i++];
  }
  return o;
}

bool removed_control(char32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
         c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

// ftfy subset, then whitespace_clean, then lower-case.
std::u32string normalize(const std::u32string& in) {
  const std::u32string text = in.find(U'<') == std::u32string::npos ? unescape_html(in) : in;
  std::u32string fixed;
  for (char32_t c : text) {
    if (removed_control(c)) continue;
    if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B)) c = U'\'';
    else if (c >= 0x201C && c <= 0x201F) c = U'"';
    else if (c >= 0xFF01 && c <= 0xFF5E) c -= 0xFEE0;
    else if (c == 0x3000) c = U' ';
    static const char32_t* const kLigatures[] = {U"ff", U"fi", U"fl", U"ffi", U"ffl", U"\u017Ft", U"st"};
    if (c >= 0xFB00 && c <= 0xFB06) fixed += kLigatures[c - 0xFB00];
    else if (c == 0x132) fixed += U"IJ";
    else if (c == 0x133) fixed += U"ij";
    else fixed += c;
  }
  std::u32string out;
  bool pending_space = false;
  for (char32_t c : fixed) {
    if (is_space(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out += U' ';
    pending_space = false;
    append_lower(out, c);
  }
  return out;
}

// CLIP's pattern, alternatives in order at each position (contractions and
// special tokens case-insensitively, as with re.IGNORECASE).
std::vector<std::u32string> pre_tokenize(const std::u32string& t) {
  static const std::u32string kFixed[] = {U"<|startoftext|>", U"<|endoftext|>", U"'s", U"'t", U"'re", U"'ve", U"'m",
                                          U"'ll", U"'d"};
  auto matches_at = [&](size_t i, const std::u32string& p) {
    if (i + p.size() > t.size()) return false;
    for (size_t k = 0; k < p.size(); ++k) {
      char32_t c = t[i + k];
      if (c >= U'A' && c <= U'Z') c |= 0x20;
      if (c != p[k]) return false;
    }
    return true;
  };
  std::vector<std::u32string> out;
  size_t i = 0;
  while (i < t.size()) {
    size_t n = 0;
    for (const auto& p : kFixed)
      if (matches_at(i, p)) {
        n = p.size();
        break;
      }
    if (n == 0) {
      const char32_t c = t[i];
      if (is_letter(c)) {
        while (i + n < t.size() && is_letter(t[i + n])) ++n;
      } else if (is_number(c)) {
        n = 1;
      } else if (!is_space(c)) {
        auto other = [](char32_t d) { return !is_space(d) && !is_letter(d) && !is_number(d); };
        while (i + n < t.size() && other(t[i + n])) ++n;
      }
    }
    if (n == 0) {
      ++i;
      continue;
    }
    out.push_back(t.substr(i, n));
    i += n;
  }
  return out;
}

// bytes_to_unicode: the printable bytes keep their code point, the others
// take U+0100 + k in byte order.
std::array<char32_t, 256> byte_symbols() {
  std::array<char32_t, 256> m{};
  int k = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    m[b] = printable ? char32_t(b) : char32_t(0x100 + k++);
  }
  return m;
}

constexpr size_t kMaxMerges = 49152 - 256 - 2;  // as CLIP and Hugging Face
constexpr size_t kMaxCache = 1 << 16;

std::string clip_text_of(const std::string& s, size_t max_len = 40) {
  return s.size() <= max_len ? s : s.substr(0, max_len) + "...";
}

}  // namespace

// ---------------------------------------------------------------- tokenizer

struct ClipTokenizer::State {
  std::string vocab_path, merges_path;
  std::vector<std::string> tokens;  // id -> entry
  std::unordered_map<std::string, int64_t> ids;
  std::unordered_map<std::string, int> ranks;  // "first second" -> rank
  std::array<std::string, 256> byte_enc;       // byte -> UTF-8 of its symbol
  std::unordered_map<char32_t, unsigned char> byte_dec;
  int64_t bos = -1, eos = -1;
  mutable std::mutex mu;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache;

  void load_vocab(const std::string& text);
  void load_merges(const std::string& text);
  std::vector<int64_t> bpe(const std::string& piece) const;
};

void ClipTokenizer::State::load_vocab(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    fail(vocab_path, ": malformed JSON (", e.what(), ")");
  }
  check(j.is_object() && !j.empty(), vocab_path, ": expected a JSON object of token -> id");
  int64_t max_id = -1;
  for (auto& [tok, v] : j.items()) {
    check(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < 10000000, vocab_path, ": token '",
          clip_text_of(tok), "' has id ", v.dump(), ", expected an integer in [0, 1e7)");
    max_id = std::max(max_id, v.get<int64_t>());
  }
  tokens.assign(size_t(max_id + 1), std::string());
  for (auto& [tok, v] : j.items()) {
    const int64_t id = v.get<int64_t>();
    check(tokens[size_t(id)].empty(), vocab_path, ": id ", id, " is given to both '", clip_text_of(tokens[size_t(id)]),
          "' and '", clip_text_of(tok), "'");
    tokens[size_t(id)] = tok;
    ids[tok] = id;
  }
  auto special = [&](const char* name) {
    auto it = ids.find(name);
    check(it != ids.end(), vocab_path, ": no entry for ", name, " (not a CLIP vocabulary)");
    return it->second;
  };
  bos = special("<|startoftext|>");
  eos = special("<|endoftext|>");
}

void ClipTokenizer::State::load_merges(const std::string& text) {
  size_t pos = 0, line_no = 0;
  int rank = 0;
  std::vector<std::pair<size_t, std::string>> lines;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.emplace_back(++line_no, line);
    pos = end + 1;
  }
  while (!lines.empty() && lines.back().second.empty()) lines.pop_back();  // trailing newlines
  for (auto& [no, line] : lines) {
    if (no == 1 && !line.empty() && line[0] == '#') continue;  // "#version: 0.2"
    if (size_t(rank) >= kMaxMerges) break;
    const size_t sp = line.find(' ');
    check(sp != std::string::npos && sp > 0 && sp + 1 < line.size() && line.find(' ', sp + 1) == std::string::npos,
          merges_path, " line ", no, ": expected two symbols separated by one space, got '", clip_text_of(line), "'");
    ranks[line] = rank++;
  }
  check(rank > 0, merges_path, ": no merges");
}

std::vector<int64_t> ClipTokenizer::State::bpe(const std::string& piece) const {
  {
    std::lock_guard<std::mutex> g(mu);
    auto it = cache.find(piece);
    if (it != cache.end()) return it->second;
  }
  // Each merge pass scans the whole piece, and a piece can take as many passes as it has bytes: a 4000-letter
  // "word" took 20 s, 40000 letters minutes. No real word comes near the limit.
  check(piece.size() <= 1000, "prompt: a word of ", piece.size(),
        " bytes (letters or symbols without spaces) is too long to tokenize (at most 1000)");
  std::vector<int64_t> out;
  if (piece == "<|startoftext|>" || piece == "<|endoftext|>") {
    out.push_back(piece == "<|startoftext|>" ? bos : eos);
  } else {
    std::vector<std::string> word;
    for (unsigned char b : piece) word.push_back(byte_enc[b]);
    word.back() += "</w>";
    std::vector<std::string> merged;
    while (word.size() > 1) {
      int best = INT_MAX;
      size_t at = 0;
      for (size_t i = 0; i + 1 < word.size(); ++i) {
        auto r = ranks.find(word[i] + " " + word[i + 1]);
        if (r != ranks.end() && r->second < best) best = r->second, at = i;
      }
      if (best == INT_MAX) break;
      const std::string first = word[at], second = word[at + 1];
      merged.clear();
      for (size_t i = 0; i < word.size();) {
        if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
          merged.push_back(first + second);
          i += 2;
        } else {
          merged.push_back(word[i++]);
        }
      }
      word.swap(merged);
    }
    for (const auto& sym : word) {
      auto it = ids.find(sym);
      check(it != ids.end(), vocab_path, ": no entry for BPE token '", sym, "' (does ", merges_path,
            " belong to this vocabulary?)");
      out.push_back(it->second);
    }
  }
  std::lock_guard<std::mutex> g(mu);
  if (cache.size() >= kMaxCache) cache.clear();
  cache.emplace(piece, out);
  return out;
}

ClipTokenizer::ClipTokenizer(const std::string& folder) : ClipTokenizer(folder + "/vocab.json", folder + "/merges.txt") {}

ClipTokenizer::ClipTokenizer(const std::string& vocab_path, const std::string& merges_path) : s_(new State) {
  s_->vocab_path = vocab_path;
  s_->merges_path = merges_path;
  s_->load_vocab(read_file(vocab_path));
  s_->load_merges(read_file(merges_path));
  const auto sym = byte_symbols();
  for (int b = 0; b < 256; ++b) {
    std::string u;
    utf8_append(u, sym[b]);
    s_->byte_enc[b] = u;
    s_->byte_dec[sym[b]] = (unsigned char)b;
  }
}

ClipTokenizer::~ClipTokenizer() = default;
ClipTokenizer::ClipTokenizer(ClipTokenizer&&) noexcept = default;
ClipTokenizer& ClipTokenizer::operator=(ClipTokenizer&&) noexcept = default;

std::vector<int64_t> ClipTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> out;
  for (const auto& piece : pre_tokenize(normalize(utf8_decode(text)))) {
    auto ids = s_->bpe(utf8_encode(piece));
    out.insert(out.end(), ids.begin(), ids.end());
  }
  return out;
}

std::string ClipTokenizer::token(int64_t id) const {
  check(id >= 0 && id < int64_t(s_->tokens.size()) && !s_->tokens[size_t(id)].empty(), "tokenizer: token id ", id,
        " is not in ", s_->vocab_path);
  return s_->tokens[size_t(id)];
}

int64_t ClipTokenizer::id_of(const std::string& tok) const {
  auto it = s_->ids.find(tok);
  return it == s_->ids.end() ? -1 : it->second;
}

std::string ClipTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string joined;
  for (int64_t id : ids)
    if (id != s_->bos && id != s_->eos) joined += token(id);
  std::string bytes;
  for (char32_t c : utf8_decode(joined)) {
    auto it = s_->byte_dec.find(c);
    if (it != s_->byte_dec.end()) bytes += char(it->second);
    else utf8_append(bytes, c);
  }
  std::string out;
  for (size_t i = 0; i < bytes.size();) {
    if (bytes.compare(i, 4, "</w>") == 0) {
      out += ' ';
      i += 4;
    } else {
      out += bytes[i++];
    }
  }
  return out;
}

int64_t ClipTokenizer::bos() const { return s_->bos; }
int64_t ClipTokenizer::eos() const { return s_->eos; }
int64_t ClipTokenizer::vocab_size() const { return int64_t(s_->tokens.size()); }

namespace detail {
std::u32string utf8_to_u32(const std::string& s) { return utf8_decode(s); }
std::string u32_to_utf8(const std::u32string& s) { return utf8_encode(s); }
bool unicode_letter(char32_t c) { return is_letter(c); }
bool unicode_number(char32_t c) { return is_number(c); }
bool unicode_space(char32_t c) { return is_space(c); }
}  // namespace detail

std::string clip_normalize_text(const std::string& text) { return utf8_encode(normalize(utf8_decode(text))); }

std::vector<std::string> clip_pre_tokenize(const std::string& normalized) {
  std::vector<std::string> out;
  for (const auto& p : pre_tokenize(utf8_decode(normalized))) out.push_back(utf8_encode(p));
  return out;
}

}  // namespace tweedie
