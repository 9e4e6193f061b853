// The text side of Stable Diffusion: CLIP BPE tokenizer (real vocabulary from
// ../shared/clip-tokenizer, ids checked against Hugging Face / OpenAI CLIP
// outputs; a synthetic vocabulary for the merge order and the file errors),
// A1111 prompt weighting and chunking, and the CLIP text transformer (tiny
// random configs: a float64 hand computation, causality, pooling, OpenCLIP
// conversion, clip skip, loading errors, bf16, the per-family encoders).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <set>

#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/models/clip_text.h"
#include "tweedie/models/clip_tokenizer.h"
#include "tweedie/models/prompt_weighting.h"

using namespace tweedie;
using tweedie::testing::error_of;

namespace {

using Ids = std::vector<int64_t>;

const std::string& vocab_dir() {
  static const std::string dir = std::string(TWEEDIE_SOURCE_DIR) + "/../shared/clip-tokenizer";
  return dir;
}

// The real tokenizer, loaded once; null when the shared files are absent.
const ClipTokenizer* real_tokenizer() {
  static std::unique_ptr<ClipTokenizer> tok = [] {
    std::ifstream f(vocab_dir() + "/vocab.json");
    return f ? std::make_unique<ClipTokenizer>(vocab_dir()) : nullptr;
  }();
  return tok.get();
}

#define REQUIRE_TOKENIZER(tok)                                                                         \
  const ClipTokenizer* tok = real_tokenizer();                                                         \
  if (!tok) GTEST_SKIP() << "CLIP tokenizer files not found in " << vocab_dir() << " (shared data)"

std::string tmp_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/clip_" + name;
  std::system(("mkdir -p '" + d + "'").c_str());
  return d;
}

// A synthetic vocabulary: a, b, c and merges "a b" < "ab c</w>" < "b c</w>".
std::string write_tiny_tokenizer(const std::string& merges) {
  const std::string d = tmp_dir("tiny");
  write_file_atomic(d + "/vocab.json",
                    R"({"a":0,"b":1,"c":2,"a</w>":3,"b</w>":4,"c</w>":5,"ab":6,"abc</w>":7,"bc</w>":8,)"
                    R"("<|startoftext|>":9,"<|endoftext|>":10})");
  write_file_atomic(d + "/merges.txt", merges);
  return d;
}

}  // namespace

// ================================================================ tokenizer

TEST(ClipTokenizer, KnownIds) {
  REQUIRE_TOKENIZER(tok);
  EXPECT_EQ(tok->bos(), 49406);
  EXPECT_EQ(tok->eos(), 49407);
  EXPECT_EQ(tok->vocab_size(), 49408);
  // Reference ids from Hugging Face's CLIPTokenizer / OpenAI's simple_tokenizer.
  const std::vector<std::pair<std::string, Ids>> cases = {
      {"a photo of a cat", {320, 1125, 539, 320, 2368}},
      {"Hello, world!", {3306, 267, 1002, 256}},
      {"A PHOTO of  a Cat!", {320, 1125, 539, 320, 2368, 256}},
      {"don't stop 42 times", {847, 713, 1691, 275, 273, 1661}},
      {"cafe uber naive", {4979, 10668, 43362}},
      {"hello-world, 3.14 (test)", {3306, 268, 1002, 267, 274, 269, 272, 275, 263, 1628, 264}},
      {"caf\xC3\xA9 \xC3\xBC" "ber na\xC3\xAFve", {15304, 6522, 1516, 1097, 35689, 563}},
      {"  spaced   out  ", {10336, 538, 620}},
      {"\xF0\x9F\x98\x80 red car", {7334, 736, 1615}},
      {"35mm photography", {274, 276, 2848, 2108}},
      {"Japanese stone lantern", {4925, 2441, 17185}},
      {"it's a dog's life", {585, 568, 320, 1929, 568, 970}},
      {"masterpiece, best quality, 1girl", {12066, 267, 949, 3027, 267, 272, 1611}},
      {"Stra\xC3\x9F" "e", {1894, 127, 253, 324}},
      {"\xD0\x9C\xD0\xBE\xD1\x81\xD0\xBA\xD0\xB2\xD0\xB0", {38018, 13506, 23669, 27152, 39813, 27080}},  // Москва
      {"a,b!?", {320, 267, 321, 6004}},
      {"snake_case", {8798, 318, 2068}},
      {"x<|endoftext|>y", {343, 49407, 344}},
  };
  for (const auto& [text, ids] : cases) EXPECT_EQ(tok->encode(text), ids) << text;
}

TEST(ClipTokenizer, DigitsPunctuationAndContractions) {
  REQUIRE_TOKENIZER(tok);
  auto id = [&](const std::string& t) { return tok->id_of(t); };
  // Every digit is its own word.
  EXPECT_EQ(tok->encode("2023"), (Ids{id("2</w>"), id("0</w>"), id("2</w>"), id("3</w>")}));
  // Contractions split off; a run of punctuation is one piece.
  EXPECT_EQ(tok->encode("don't"), (Ids{id("don</w>"), id("'t</w>")}));
  EXPECT_EQ(tok->encode("we'll"), (Ids{id("we</w>"), id("'ll</w>")}));
  EXPECT_EQ(clip_pre_tokenize("!'s it's 'll"), (std::vector<std::string>{"!'", "s", "it", "'s", "'ll"}));
  EXPECT_EQ(tok->encode("!!"), (Ids{id("!!</w>")}));
  // Curly apostrophes are straightened (ftfy), case and whitespace fold.
  EXPECT_EQ(tok->encode("don\xE2\x80\x99t"), tok->encode("don't"));
  EXPECT_EQ(tok->encode("  A\tPHOTO\n\n of a CAT  "), tok->encode("a photo of a cat"));
  EXPECT_EQ(tok->encode("\xEF\xBC\xA1\xEF\xBC\xA2"), tok->encode("ab"));  // fullwidth ＡＢ
  EXPECT_EQ(tok->encode("&amp;"), tok->encode("&"));
  EXPECT_EQ(tok->encode("<b>&amp;"), tok->encode("<b>&amp;"));  // a '<' keeps entities (ftfy's rule)
  EXPECT_NE(tok->encode("<b>&amp;"), tok->encode("<b>&"));
}

TEST(ClipTokenizer, NormalizationAndUnicodeClasses) {
  EXPECT_EQ(clip_normalize_text("  Hello\t\tW\xC3\x96RLD \xC2\xA0 "), "hello w\xC3\xB6rld");
  EXPECT_EQ(clip_normalize_text("\xC4\xB0"), "i\xCC\x87");               // İ -> i + U+0307, as Python
  EXPECT_EQ(clip_normalize_text("\xCE\xA9\xD0\x96\xE1\xBA\x9E"), "\xCF\x89\xD0\xB6\xC3\x9F");  // ΩЖẞ -> ωжß
  EXPECT_EQ(clip_normalize_text("a\x01" "b\xEF\xBB\xBF"), "ab");          // control characters removed
  EXPECT_EQ(clip_normalize_text("\xEF\xAC\x81" "ne"), "fine");            // ligature ﬁ
  EXPECT_EQ(clip_normalize_text(""), "");
  // Letters run together, numbers split, symbols/emoji form punctuation runs.
  EXPECT_EQ(clip_pre_tokenize("na\xC3\xAFve \xCE\xB1\xCE\xB2 \xE6\x97\xA5\xE6\x9C\xAC 12 \xC2\xBD\xC2\xB2 \xF0\x9F\x94\xA5!"),
            (std::vector<std::string>{"na\xC3\xAFve", "\xCE\xB1\xCE\xB2", "\xE6\x97\xA5\xE6\x9C\xAC", "1", "2",
                                      "\xC2\xBD", "\xC2\xB2", "\xF0\x9F\x94\xA5!"}));
  EXPECT_NE(error_of([] { clip_normalize_text("bad \xC3"); }).find("invalid UTF-8 at byte 4"), std::string::npos);
  EXPECT_NE(error_of([] { clip_normalize_text("\xED\xA0\x80"); }).find("invalid UTF-8"), std::string::npos);  // surrogate
}

TEST(ClipTokenizer, EmptyPromptAndDecode) {
  REQUIRE_TOKENIZER(tok);
  EXPECT_TRUE(tok->encode("").empty());
  EXPECT_TRUE(tok->encode(" \t\n ").empty());
  EXPECT_EQ(tok->decode({49406, 320, 1125, 539, 320, 2368, 49407}), "a photo of a cat ");
  const std::string text = "caf\xC3\xA9, \xE6\x97\xA5\xE6\x9C\xAC 3.14 don't \xF0\x9F\x94\xA5";
  EXPECT_EQ(tok->decode(tok->encode(text)), "caf\xC3\xA9 , \xE6\x97\xA5\xE6\x9C\xAC 3 . 1 4 don 't \xF0\x9F\x94\xA5 ");
  EXPECT_EQ(tok->token(320), "a</w>");
  EXPECT_NE(error_of([&] { tok->token(49408); }).find("token id 49408"), std::string::npos);
}

TEST(ClipTokenizer, MergeRanksOrderTheMerges) {
  // "a b" first, then "ab c</w>": abc -> one token.
  ClipTokenizer t1(write_tiny_tokenizer("#version: 0.2\na b\nab c</w>\nb c</w>\n"));
  EXPECT_EQ(t1.encode("abc"), (Ids{7}));
  // Every non-overlapping occurrence is merged, left to right.
  EXPECT_EQ(t1.encode("abab"), (Ids{6, 0, 4}));
  EXPECT_EQ(t1.encode("c"), (Ids{5}));
  EXPECT_EQ(t1.bos(), 9);
  EXPECT_EQ(t1.eos(), 10);
  // "b c</w>" ranked first: a + bc</w>, which no merge joins.
  ClipTokenizer t2(write_tiny_tokenizer("#version: 0.2\nb c</w>\na b\nab c</w>\n"));
  EXPECT_EQ(t2.encode("abc"), (Ids{0, 8}));
  // A piece whose BPE symbols are not in the vocabulary names the files.
  EXPECT_NE(error_of([&] { t1.encode("d"); }).find("no entry for BPE token 'd</w>'"), std::string::npos);
}

TEST(ClipTokenizer, BadFilesAreNamed) {
  const std::string d = tmp_dir("bad");
  std::remove((d + "/vocab.json").c_str());
  auto e = error_of([&] { ClipTokenizer t(d); });
  EXPECT_NE(e.find(d + "/vocab.json"), std::string::npos) << e;
  EXPECT_NE(e.find("cannot open"), std::string::npos) << e;

  write_file_atomic(d + "/vocab.json", R"({"a": 0, "<|startoftext|>": 1, "<|endoftext|>": 2)");  // truncated
  write_file_atomic(d + "/merges.txt", "#version: 0.2\na b\n");
  e = error_of([&] { ClipTokenizer t(d); });
  EXPECT_NE(e.find("vocab.json: malformed JSON"), std::string::npos) << e;

  write_file_atomic(d + "/vocab.json", R"({"a": 0, "b": "x"})");
  e = error_of([&] { ClipTokenizer t(d); });
  EXPECT_NE(e.find("vocab.json: token 'b' has id \"x\""), std::string::npos) << e;

  write_file_atomic(d + "/vocab.json", R"({"a": 0, "b": 1})");
  e = error_of([&] { ClipTokenizer t(d); });
  EXPECT_NE(e.find("vocab.json: no entry for <|startoftext|>"), std::string::npos) << e;

  write_file_atomic(d + "/vocab.json", R"({"a": 0, "b": 0, "<|startoftext|>": 1, "<|endoftext|>": 2})");
  e = error_of([&] { ClipTokenizer t(d); });
  EXPECT_NE(e.find("id 0 is given to both"), std::string::npos) << e;

  write_file_atomic(d + "/vocab.json", R"({"a": 0, "b": 1, "<|startoftext|>": 2, "<|endoftext|>": 3})");
  write_file_atomic(d + "/merges.txt", "#version: 0.2\na b\nab\n");
  e = error_of([&] { ClipTokenizer t(d); });
  EXPECT_NE(e.find("merges.txt line 3: expected two symbols"), std::string::npos) << e;

  write_file_atomic(d + "/merges.txt", "#version: 0.2\n");
  e = error_of([&] { ClipTokenizer t(d); });
  EXPECT_NE(e.find("merges.txt: no merges"), std::string::npos) << e;
}

// ================================================================ prompt weighting

namespace {

using Parsed = std::vector<std::pair<std::string, double>>;

Parsed parsed(const std::string& prompt) {
  Parsed out;
  for (const auto& w : parse_prompt_attention(prompt)) out.emplace_back(w.text, w.weight);
  return out;
}

}  // namespace

TEST(PromptWeighting, A1111Doctests) {
  // modules/prompt_parser.py's doctest outputs, compared exactly.
  EXPECT_EQ(parsed("normal text"), (Parsed{{"normal text", 1.0}}));
  EXPECT_EQ(parsed("an (important) word"), (Parsed{{"an ", 1.0}, {"important", 1.1}, {" word", 1.0}}));
  EXPECT_EQ(parsed("(unbalanced"), (Parsed{{"unbalanced", 1.1}}));
  EXPECT_EQ(parsed("\\(literal\\]"), (Parsed{{"(literal]", 1.0}}));
  EXPECT_EQ(parsed("(unnecessary)(parens)"), (Parsed{{"unnecessaryparens", 1.1}}));
  EXPECT_EQ(parsed("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
            (Parsed{{"a ", 1.0},
                    {"house", 1.5730000000000004},
                    {" ", 1.1},
                    {"on", 1.0},
                    {" a ", 1.1},
                    {"hill", 0.55},
                    {", sun, ", 1.1},
                    {"sky", 1.4641000000000006},
                    {".", 1.1}}));
}

TEST(PromptWeighting, BracketsEscapesAndWeights) {
  EXPECT_EQ(parsed("a (b:1.5) c"), (Parsed{{"a ", 1.0}, {"b", 1.5}, {" c", 1.0}}));
  EXPECT_EQ(parsed("((a))"), (Parsed{{"a", 1.1 * 1.1}}));
  EXPECT_EQ(parsed("[a]"), (Parsed{{"a", 1.0 / 1.1}}));
  EXPECT_EQ(parsed("[[a]] b"), (Parsed{{"a", (1.0 / 1.1) * (1.0 / 1.1)}, {" b", 1.0}}));
  EXPECT_EQ(parsed("\\(a\\)"), (Parsed{{"(a)", 1.0}}));
  EXPECT_EQ(parsed("a\\\\b\\c"), (Parsed{{"a\\bc", 1.0}}));  // \\ is a backslash, a lone \ is dropped
  EXPECT_EQ(parsed("(a : 0.5 )"), (Parsed{{"a ", 0.5}}));  // the space before ":" is text
  EXPECT_EQ(parsed("(a:-1)"), (Parsed{{"a", -1.0}}));
  EXPECT_EQ(parsed("((a:2) b)"), (Parsed{{"a", 2 * 1.1}, {" b", 1.1}}));
  // Unmatched closers and stray colons are text.
  EXPECT_EQ(parsed("a) b] c:d"), (Parsed{{"a) b] c:d", 1.0}}));
  EXPECT_EQ(parsed("x :2)"), (Parsed{{"x :2)", 1.0}}));
  EXPECT_EQ(parsed("[a:1.5]"), (Parsed{{"a:1.5", 1.0 / 1.1}}));
  EXPECT_EQ(parsed("[unclosed (both"), (Parsed{{"unclosed ", 1.0 / 1.1}, {"both", 1.1 * (1.0 / 1.1)}}));
  EXPECT_EQ(parsed(""), (Parsed{{"", 1.0}}));
  EXPECT_NE(error_of([] { parse_prompt_attention("(a:1.2.3)"); }).find("weight '1.2.3' in ':1.2.3)' is not a number"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_prompt_attention("(a:.)"); }).find("weight '.'"), std::string::npos);
}

TEST(PromptWeighting, Break) {
  auto r = parse_prompt_attention("a cat BREAK  a dog");
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].text, "a cat");
  EXPECT_TRUE(r[1].is_break);
  EXPECT_EQ(r[1].weight, -1.0);
  EXPECT_EQ(r[2].text, "a dog");
  // Only the whole uppercase word breaks.
  EXPECT_EQ(parsed("aBREAK break BREAKs"), (Parsed{{"aBREAK break BREAKs", 1.0}}));
  EXPECT_EQ(parsed("x,BREAK,y").size(), 3u);
  // Inside brackets it still breaks (A1111 would turn it into text).
  r = parse_prompt_attention("(a BREAK b)");
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].weight, 1.1);
  EXPECT_TRUE(r[1].is_break);
  EXPECT_EQ(r[2].weight, 1.1);
}

TEST(PromptWeighting, ChunksAndWindows) {
  REQUIRE_TOKENIZER(tok);
  const int64_t cat = tok->id_of("cat</w>");
  // 200 words -> 75 + 75 + 50 tokens -> 3 windows of 77.
  std::string words;
  for (int i = 0; i < 200; ++i) words += "cat ";
  auto chunks = chunk_prompt(*tok, words);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].tokens.size(), 75u);
  EXPECT_EQ(chunks[2].tokens.size(), 50u);
  for (int64_t pad : {int64_t(49407), int64_t(0)}) {
    auto w = prompt_windows(chunks, tok->bos(), tok->eos(), pad);
    ASSERT_EQ(w.ids.sizes(), (std::vector<int64_t>{3, 77}));
    EXPECT_EQ(w.ids[0][0].item<int64_t>(), 49406);
    EXPECT_TRUE(w.ids[0].slice(0, 1, 76).eq(cat).all().item<bool>());
    EXPECT_EQ(w.ids[0][76].item<int64_t>(), 49407);
    EXPECT_EQ(w.ids[2][51].item<int64_t>(), 49407);
    EXPECT_TRUE(w.ids[2].slice(0, 52).eq(pad).all().item<bool>());
    EXPECT_TRUE(w.weights.eq(1).all().item<bool>());
  }
  // An empty prompt is one window [BOS, EOS, pad...].
  chunks = chunk_prompt(*tok, "");
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_TRUE(chunks[0].tokens.empty());
  auto w = prompt_windows(chunks, tok->bos(), tok->eos(), 0);
  EXPECT_EQ(w.ids[0][1].item<int64_t>(), 49407);
  EXPECT_EQ(w.ids.sum().item<int64_t>(), 49406 + 49407);
  // Weights follow their tokens.
  chunks = chunk_prompt(*tok, "(cat:1.5) [dog]");
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].tokens, (Ids{cat, tok->id_of("dog</w>")}));
  EXPECT_EQ(chunks[0].weights, (std::vector<double>{1.5, 1 / 1.1}));
  w = prompt_windows(chunks, tok->bos(), tok->eos(), 49407);
  EXPECT_FLOAT_EQ(w.weights[0][1].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(w.weights[0][2].item<float>(), float(1 / 1.1));
  EXPECT_FLOAT_EQ(w.weights[0][3].item<float>(), 1.0f);
  // Without emphasis, brackets are text.
  chunks = chunk_prompt(*tok, "(cat)", {false, 20});
  EXPECT_EQ(chunks[0].tokens, tok->encode("(cat)"));
  EXPECT_EQ(chunks[0].weights, std::vector<double>(chunks[0].tokens.size(), 1.0));
}

TEST(PromptWeighting, BreakAndCommaBacktrack) {
  REQUIRE_TOKENIZER(tok);
  auto chunks = chunk_prompt(*tok, "a cat BREAK a dog");
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].tokens, tok->encode("a cat"));
  EXPECT_EQ(chunks[1].tokens, tok->encode("a dog"));
  EXPECT_EQ(chunk_prompt(*tok, "BREAK cat").size(), 2u);  // the first chunk is empty
  EXPECT_TRUE(chunk_prompt(*tok, "BREAK cat")[0].tokens.empty());

  // 70 cats, a comma, 10 dogs: when the chunk fills (75), the 4 dogs after
  // the comma (within 20 tokens) move to the next chunk.
  std::string p;
  for (int i = 0; i < 70; ++i) p += "cat ";
  p += ", ";
  for (int i = 0; i < 10; ++i) p += "dog ";
  chunks = chunk_prompt(*tok, p);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].tokens.size(), 71u);
  EXPECT_EQ(chunks[0].tokens.back(), tok->id_of(",</w>"));
  EXPECT_EQ(chunks[1].tokens, Ids(10, tok->id_of("dog</w>")));
  chunks = chunk_prompt(*tok, p, {true, 0});  // backtracking off
  EXPECT_EQ(chunks[0].tokens.size(), 75u);
  EXPECT_EQ(chunks[1].tokens.size(), 6u);
  chunks = chunk_prompt(*tok, p, {true, 4});  // the comma is 5 back: too far
  EXPECT_EQ(chunks[0].tokens.size(), 75u);
  EXPECT_NE(error_of([&] { chunk_prompt(*tok, p, {true, -1}); }).find("comma backtrack"), std::string::npos);
}

TEST(PromptWeighting, EmphasisRestoresTheMean) {
  torch::manual_seed(0);
  auto z = torch::randn({2, 77, 16}) + 0.3;
  auto w = torch::ones({2, 77});
  w.index_put_({0, torch::indexing::Slice(1, 5)}, 1.5);
  w.index_put_({1, torch::indexing::Slice(3, 4)}, 0.5);
  auto out = apply_emphasis(z, w);
  // Mean per chunk is unchanged; out = c_k * w * z with one c_k per chunk.
  EXPECT_TRUE(torch::allclose(out.mean({1, 2}), z.mean({1, 2}), 1e-5, 1e-6));
  auto ratio = out / (z * w.unsqueeze(-1));
  for (int k = 0; k < 2; ++k) EXPECT_LT((ratio[k] - ratio[k].mean()).abs().max().item<float>(), 1e-4);
  EXPECT_GT((ratio[0].mean() - 1).abs().item<float>(), 1e-3);  // a real rescale happened
  // "No norm": exactly z * w; all-ones weights: z itself.
  EXPECT_TRUE(torch::equal(apply_emphasis(z, w, false), z * w.unsqueeze(-1)));
  EXPECT_TRUE(apply_emphasis(z, torch::ones({2, 77})).is_same(z));
  // bf16 in, bf16 out, computed in float32.
  auto zb = z.to(torch::kBFloat16);
  EXPECT_EQ(apply_emphasis(zb, w).scalar_type(), torch::kBFloat16);
  EXPECT_NE(error_of([&] { apply_emphasis(z, torch::ones({2, 76})); }).find("do not match"), std::string::npos);
}

// ================================================================ text encoder

namespace {

ClipTextConfig tiny_config(const std::string& act = "quick_gelu", int64_t layers = 2, int64_t vocab = 50,
                           int64_t width = 32, int64_t proj = 24) {
  ClipTextConfig c;
  c.vocab_size = vocab, c.width = width, c.layers = layers, c.heads = width / 8, c.intermediate = 2 * width;
  c.max_positions = 77, c.projection_dim = proj, c.activation = act;
  return c;
}

// A model with non-trivial layer norms and biases, seeded.
ClipTextModel tiny_model(const ClipTextConfig& c, uint64_t seed = 1) {
  torch::manual_seed(seed);
  ClipTextModel m(c);
  torch::NoGradGuard g;
  for (auto& p : m->named_parameters()) {
    if (p.key().find("layer_norm") != std::string::npos && p.key().find("weight") != std::string::npos)
      p.value().uniform_(0.5, 1.5);
    else if (p.key().find("bias") != std::string::npos || p.key().find("embedding") != std::string::npos)
      p.value().normal_(0, 0.5);
    else
      p.value().normal_(0, 1.0 / std::sqrt(double(p.value().size(-1))));
  }
  m->eval();
  return m;
}

StateDict hf_state(ClipTextModel& m, const std::string& prefix) {
  StateDict sd;
  for (auto& p : m->named_parameters()) sd[prefix + p.key()] = p.value().detach().clone();
  return sd;
}

torch::Tensor random_ids(int64_t B, int64_t L, int64_t vocab, uint64_t seed = 3) {
  torch::manual_seed(seed);
  return torch::randint(0, vocab - 1, {B, L}, torch::kInt64);
}

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kFloat64) - b.to(torch::kFloat64)).norm() / b.to(torch::kFloat64).norm()).item<double>();
}

}  // namespace

TEST(ClipText, MatchesFloat64HandComputation) {
  for (std::string act : {"quick_gelu", "gelu"}) {
    auto m = tiny_model(tiny_config(act, 1));
    auto ids = random_ids(2, 9, 50);
    ids[0][5] = 49;  // the largest id: the pooling position of row 0
    auto out = m->forward(ids, 1, true, true);

    auto P = [&](const std::string& n) { return hf_state(m, "")[n].to(torch::kFloat64); };
    auto ln = [&](const torch::Tensor& x, const std::string& n) {
      auto mu = x.mean(-1, true), var = (x - mu).pow(2).mean(-1, true);
      return (x - mu) / torch::sqrt(var + 1e-5) * P(n + ".weight") + P(n + ".bias");
    };
    auto lin = [&](const torch::Tensor& x, const std::string& n) {
      return torch::matmul(x, P(n + ".weight").t()) + P(n + ".bias");
    };
    const std::string l = "text_model.encoder.layers.0.";
    const int64_t B = 2, L = 9, H = 4, d = 8;  // width 32, head size 8
    auto x = P("text_model.embeddings.token_embedding.weight").index({ids}) +
             P("text_model.embeddings.position_embedding.weight").slice(0, 0, L);
    auto h = ln(x, l + "layer_norm1");
    auto split = [&](const torch::Tensor& t) { return t.view({B, L, H, d}).permute({0, 2, 1, 3}); };
    auto q = split(lin(h, l + "self_attn.q_proj")), k = split(lin(h, l + "self_attn.k_proj")),
         v = split(lin(h, l + "self_attn.v_proj"));
    auto s = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(double(d));
    auto future = torch::ones({L, L}, torch::kBool).triu(1);
    s = s.masked_fill(future, -INFINITY);
    auto o = torch::matmul(torch::softmax(s, -1), v).permute({0, 2, 1, 3}).reshape({B, L, H * d});
    x = x + lin(o, l + "self_attn.out_proj");
    auto f = lin(ln(x, l + "layer_norm2"), l + "mlp.fc1");
    f = act == "gelu" ? 0.5 * f * (1 + torch::erf(f / std::sqrt(2.0))) : f * torch::sigmoid(1.702 * f);
    x = x + lin(f, l + "mlp.fc2");
    auto last = ln(x, "text_model.final_layer_norm");
    EXPECT_LT((out.hidden.to(torch::kFloat64) - last).abs().max().item<double>(), 2e-5) << act;
    auto eos = ids.argmax(-1);
    auto pooled = torch::matmul(torch::stack({last[0][eos[0]], last[1][eos[1]]}), P("text_projection.weight").t());
    EXPECT_EQ(eos[0].item<int64_t>(), 5);
    EXPECT_LT((out.pooled.to(torch::kFloat64) - pooled).abs().max().item<double>(), 2e-5) << act;
  }
}

TEST(ClipText, CausalPooledAndClipSkip) {
  auto m = tiny_model(tiny_config("gelu", 3));
  auto ids = random_ids(1, 12, 50);
  auto a = m->forward(ids, 1).hidden;
  auto ids2 = ids.clone();
  ids2[0][7] = (ids[0][7].item<int64_t>() + 1) % 49;
  auto b = m->forward(ids2, 1).hidden;
  // Positions before the change see nothing of it; the changed one does.
  EXPECT_TRUE(torch::allclose(a.slice(1, 0, 7), b.slice(1, 0, 7), 0, 1e-6));
  EXPECT_GT((a.slice(1, 7) - b.slice(1, 7)).abs().max().item<float>(), 1e-3);

  // Pooled = projection of the final-normed last layer at the first largest id
  // (EOS padding: the first of several).
  ids.slice(1, 6).fill_(49);
  auto out = m->forward(ids, 1, true, true);
  auto expect = m->text_projection->forward(out.hidden.select(1, 6));
  EXPECT_TRUE(torch::allclose(out.pooled, expect, 1e-5, 1e-6));
  auto no_proj = tiny_model(tiny_config("gelu", 3, 50, 32, 0));
  auto out2 = no_proj->forward(ids, 1, true, true);
  EXPECT_TRUE(torch::equal(out2.pooled, out2.hidden.select(1, 6)));

  // clip skip 2 = before the last layer: changing the last layer leaves it
  // unchanged and changes clip skip 1; with pooled the same hidden comes out.
  auto skip2 = m->forward(ids, 2, false).hidden;
  EXPECT_TRUE(torch::equal(m->forward(ids, 2, false, true).hidden, skip2));
  auto skip1 = m->forward(ids, 1, false).hidden;
  {
    torch::NoGradGuard g;
    m->layers[2]->as<ClipEncoderLayer>()->fc2->bias.add_(1.0);
  }
  EXPECT_TRUE(torch::equal(m->forward(ids, 2, false).hidden, skip2));
  EXPECT_GT((m->forward(ids, 1, false).hidden - skip1).abs().max().item<float>(), 0.5);
  // final_norm applies final_layer_norm to the chosen layer.
  EXPECT_TRUE(torch::allclose(m->forward(ids, 2, true).hidden, m->final_layer_norm->forward(skip2), 1e-6, 1e-6));

  EXPECT_NE(error_of([&] { m->forward(ids, 4); }).find("clip skip 4 is not in [1, 3]"), std::string::npos);
  EXPECT_NE(error_of([&] { m->forward(torch::full({1, 3}, 50, torch::kInt64)); }).find("token id 50 is outside"),
            std::string::npos);
  EXPECT_NE(error_of([&] { m->forward(torch::zeros({1, 78}, torch::kInt64)); }).find("1 <= L <= 77"),
            std::string::npos);
}

TEST(ClipText, OpenClipLayoutConvertsToTheSameModel) {
  auto m = tiny_model(tiny_config("gelu", 3));
  // Write the same weights in OpenCLIP's layout, as SD2 checkpoints hold them.
  const std::string src = "cond_stage_model.model.";
  StateDict oc, hf = hf_state(m, "");
  auto H = [&](const std::string& n) { return hf.at("text_model." + n); };
  oc[src + "token_embedding.weight"] = H("embeddings.token_embedding.weight");
  oc[src + "positional_embedding"] = H("embeddings.position_embedding.weight");
  oc[src + "ln_final.weight"] = H("final_layer_norm.weight");
  oc[src + "ln_final.bias"] = H("final_layer_norm.bias");
  oc[src + "text_projection"] = hf.at("text_projection.weight").t().contiguous();
  oc[src + "logit_scale"] = torch::tensor(4.6f);
  oc["model.diffusion_model.other.weight"] = torch::zeros({1});
  for (int i = 0; i < 3; ++i) {
    const std::string o = src + "transformer.resblocks." + std::to_string(i) + ".";
    const std::string h = "encoder.layers." + std::to_string(i) + ".";
    for (std::string kind : {"weight", "bias"}) {
      oc[o + "attn.in_proj_" + kind] = torch::cat(
          {H(h + "self_attn.q_proj." + kind), H(h + "self_attn.k_proj." + kind), H(h + "self_attn.v_proj." + kind)});
      oc[o + "attn.out_proj." + kind] = H(h + "self_attn.out_proj." + kind);
      oc[o + "ln_1." + kind] = H(h + "layer_norm1." + kind);
      oc[o + "ln_2." + kind] = H(h + "layer_norm2." + kind);
      oc[o + "mlp.c_fc." + kind] = H(h + "mlp.fc1." + kind);
      oc[o + "mlp.c_proj." + kind] = H(h + "mlp.fc2." + kind);
    }
  }
  // The converted keys are exactly the HF names, with equal tensors.
  auto conv = openclip_to_hf(oc, src, "te.");
  std::set<std::string> got;
  for (auto& [k, t] : conv)
    if (k.rfind("te.", 0) == 0) {
      got.insert(k.substr(3));
      EXPECT_TRUE(torch::equal(t, hf.at(k.substr(3)))) << k;
    }
  std::set<std::string> want;
  for (auto& [k, t] : hf) want.insert(k);
  EXPECT_EQ(got, want);
  EXPECT_EQ(conv.count("model.diffusion_model.other.weight"), 1u);
  EXPECT_EQ(conv.count("te.logit_scale"), 0u);
  EXPECT_TRUE(is_openclip_layout(oc, src));
  EXPECT_FALSE(is_openclip_layout(conv, "te."));

  // Older SD1 checkpoints: HF names without "text_model.".
  StateDict legacy;
  for (auto& [k, t] : hf) legacy["cond_stage_model.transformer." + (k.rfind("text_model.", 0) == 0 ? k.substr(11) : k)] = t;
  EXPECT_TRUE(is_legacy_hf_layout(legacy, "cond_stage_model.transformer."));
  EXPECT_FALSE(is_legacy_hf_layout(hf, ""));
  auto from_legacy = load_clip_text(legacy, "cond_stage_model.transformer.", "gelu", torch::kFloat32, torch::kCPU, 8);

  // Loading any layout gives the same outputs, bit for bit.
  auto from_oc = load_clip_text(oc, src, "", torch::kFloat32, torch::kCPU, 8);
  auto from_hf = load_clip_text(hf_state(m, "cond_stage_model.transformer."), "cond_stage_model.transformer.", "gelu",
                               torch::kFloat32, torch::kCPU, 8);
  EXPECT_EQ(from_oc->config().activation, "gelu");
  EXPECT_EQ(from_oc->config().projection_dim, 24);
  auto ids = random_ids(2, 77, 50);
  auto a = from_oc->forward(ids, 2, false, true), b = from_hf->forward(ids, 2, false, true),
       c = m->forward(ids, 2, false, true);
  EXPECT_TRUE(torch::equal(a.hidden, c.hidden));
  EXPECT_TRUE(torch::equal(b.hidden, c.hidden));
  EXPECT_TRUE(torch::equal(a.pooled, c.pooled));
  EXPECT_TRUE(torch::equal(from_legacy->forward(ids, 2, false, true).pooled, c.pooled));
}

TEST(ClipText, ConfigInference) {
  // CLIP-L shapes (small vocabulary to keep it light): quick_gelu by default.
  StateDict sd;
  const std::string p = "cond_stage_model.transformer.";
  sd[p + "text_model.embeddings.token_embedding.weight"] = torch::empty({10, 768});
  sd[p + "text_model.embeddings.position_embedding.weight"] = torch::empty({77, 768});
  for (int i = 0; i < 12; ++i) sd[p + "text_model.encoder.layers." + std::to_string(i) + ".mlp.fc1.weight"] = torch::empty({3072, 768});
  auto c = infer_clip_text_config(sd, p);
  EXPECT_EQ(c.width, 768);
  EXPECT_EQ(c.layers, 12);
  EXPECT_EQ(c.heads, 12);
  EXPECT_EQ(c.intermediate, 3072);
  EXPECT_EQ(c.vocab_size, 10);
  EXPECT_EQ(c.projection_dim, 0);
  EXPECT_EQ(c.activation, "quick_gelu");
  EXPECT_EQ(infer_clip_text_config(sd, p, "gelu").activation, "gelu");
  // A tiny model's own state dict gives back its config.
  auto m = tiny_model(tiny_config("gelu", 3, 50, 128, 16));
  c = infer_clip_text_config(hf_state(m, ""), "");
  EXPECT_EQ(c.heads, 2);
  EXPECT_EQ(c.layers, 3);
  EXPECT_EQ(c.intermediate, 256);
  EXPECT_EQ(c.projection_dim, 16);
  EXPECT_EQ(c.activation, "gelu");
  EXPECT_EQ(c.describe(), "width 128, 3 layers, 2 heads, gelu, projection 16");
  // Presets.
  EXPECT_EQ(ClipTextConfig::openclip_bigg().heads * 64, 1280);
  EXPECT_EQ(ClipTextConfig::openclip_h().layers, 24);
  EXPECT_EQ(ClipTextConfig::clip_l().activation, "quick_gelu");
  // Errors name the key.
  sd.erase(p + "text_model.embeddings.position_embedding.weight");
  EXPECT_NE(error_of([&] { infer_clip_text_config(sd, p); })
                .find("missing 'cond_stage_model.transformer.text_model.embeddings.position_embedding.weight'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { infer_clip_text_config(hf_state(m, ""), "", "", 48); }).find("not a multiple of the head size"),
            std::string::npos);
  auto bad = tiny_config();
  bad.activation = "relu";
  EXPECT_NE(error_of([&] { ClipTextModel x(bad); }).find("activation 'relu'"), std::string::npos);
}

TEST(ClipText, LoadingErrorsNameTheKeys) {
  auto m = tiny_model(tiny_config("gelu", 2));
  const std::string p = "conditioner.embedders.0.transformer.";
  auto sd = hf_state(m, p);
  sd[p + "text_model.embeddings.position_ids"] = torch::arange(77).unsqueeze(0);  // accepted, ignored
  sd["first_stage_model.decoder.conv_in.weight"] = torch::zeros({1});             // outside the prefix
  ClipTextModel target(tiny_config("gelu", 2));
  load_clip_text_weights(target, sd, p);
  auto ids = random_ids(1, 20, 50);
  EXPECT_TRUE(torch::equal(target->forward(ids).hidden, m->forward(ids).hidden));

  auto missing = sd;
  missing.erase(p + "text_model.encoder.layers.1.mlp.fc2.bias");
  auto e = error_of([&] { load_clip_text_weights(target, missing, p); });
  EXPECT_NE(e.find("missing conditioner.embedders.0.transformer.text_model.encoder.layers.1.mlp.fc2.bias"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("width 32, 2 layers, 4 heads, gelu, projection 24"), std::string::npos) << e;

  auto shaped = sd;
  shaped[p + "text_model.final_layer_norm.weight"] = torch::ones({31});
  e = error_of([&] { load_clip_text_weights(target, shaped, p); });
  EXPECT_NE(e.find("wrong shape conditioner.embedders.0.transformer.text_model.final_layer_norm.weight [31] (expected [32])"),
            std::string::npos)
      << e;

  auto extra = sd;
  extra[p + "text_model.encoder.layers.2.mlp.fc1.weight"] = torch::zeros({64, 32});
  e = error_of([&] { load_clip_text_weights(target, extra, p); });
  EXPECT_NE(e.find("unexpected conditioner.embedders.0.transformer.text_model.encoder.layers.2.mlp.fc1.weight"),
            std::string::npos)
      << e;

  // Through load_clip_text (config inferred from the damaged dict) and the
  // OpenCLIP path, the error still names the key.
  e = error_of([&] { load_clip_text(missing, p, "gelu", torch::kFloat32, torch::kCPU, 8); });
  EXPECT_NE(e.find("layers.1.mlp.fc2.bias"), std::string::npos) << e;
  StateDict oc = {{"m.token_embedding.weight", torch::zeros({50, 64})},
                  {"m.positional_embedding", torch::zeros({77, 64})},
                  {"m.transformer.resblocks.0.mlp.c_fc.weight", torch::zeros({128, 64})}};
  e = error_of([&] { load_clip_text(oc, "m."); });
  EXPECT_NE(e.find("missing text_model.encoder.layers.0.self_attn.q_proj.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("OpenCLIP layout under 'm.'"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { load_clip_text({}, "cond_stage_model.transformer."); }).find("missing"), std::string::npos);
}

TEST(ClipText, Bf16AgreesWithFp32) {
  auto m = tiny_model(tiny_config("quick_gelu", 3, 50, 64, 32));
  auto sd = hf_state(m, "");
  auto b = load_clip_text(sd, "", "quick_gelu", torch::kBFloat16, torch::kCPU, 8);
  EXPECT_EQ(b->dtype(), torch::kBFloat16);
  auto ids = random_ids(2, 77, 50);
  auto f32 = m->forward(ids, 1, true, true), bf = b->forward(ids, 1, true, true);
  EXPECT_EQ(bf.hidden.scalar_type(), torch::kBFloat16);
  const double eh = rel_err(bf.hidden, f32.hidden), ep = rel_err(bf.pooled, f32.pooled);
  std::cout << "bf16 vs fp32 relative error: hidden " << eh << ", pooled " << ep << "\n";
  EXPECT_LT(eh, 0.03);
  EXPECT_LT(ep, 0.03);
  EXPECT_GT(eh, 0.0);  // it really ran in bf16
}

TEST(ClipText, EncodeWindowsConcatenatesChunks) {
  // In float64: the windows run as one batch and as single rows, and float32
  // matmuls of different row counts differ by ~1e-5 relative (OpenBLAS's
  // blocking depends on the shape), which would blur what this compares.
  auto m = tiny_model(tiny_config("gelu", 2));
  m->to(torch::kFloat64);
  std::vector<PromptChunk> chunks(3);
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 10 + 20 * c; ++i) {
      chunks[size_t(c)].tokens.push_back((i * 7 + c) % 40);
      chunks[size_t(c)].weights.push_back(i % 5 == 0 ? 1.3 : 1.0);
    }
  auto w = prompt_windows(chunks, 47, 49, 0);
  auto enc = encode_windows(m, w, 1, true, true);
  ASSERT_EQ(enc.context.sizes(), (std::vector<int64_t>{1, 3 * 77, 32}));
  ASSERT_EQ(enc.pooled.sizes(), (std::vector<int64_t>{1, 24}));
  for (int c = 0; c < 3; ++c) {
    auto one = m->forward(w.ids.slice(0, c, c + 1), 1, true, true);
    auto expect = apply_emphasis(one.hidden, w.weights.slice(0, c, c + 1))[0];
    EXPECT_TRUE(torch::allclose(enc.context[0].slice(0, 77 * c, 77 * (c + 1)), expect, 1e-12, 1e-12)) << c;
    if (c == 0) EXPECT_TRUE(torch::allclose(enc.pooled, one.pooled, 1e-12, 1e-12));
  }
  EXPECT_FALSE(enc.context.requires_grad());
}

TEST(ClipText, FamilyEncodersFollowTheirRules) {
  REQUIRE_TOKENIZER(tok);
  auto cfg = [](int64_t layers, int64_t width, int64_t proj) {
    auto c = tiny_config("gelu", layers, 49408, width, proj);
    return c;
  };
  const std::string prompt = "a (red:1.3) cat, BREAK a dog";
  const auto chunks = chunk_prompt(*tok, prompt);
  auto windows = [&](int64_t pad) { return prompt_windows(chunks, 49406, 49407, pad); };

  // SD1: EOS padding, last layer, final layer norm; clip skip 2 = penultimate.
  auto l = tiny_model(cfg(3, 32, 24), 5);
  auto sd1 = TextEncoderSet::sd1(ClipTokenizer(vocab_dir()), l);
  auto e1 = sd1.encode(prompt);
  EXPECT_EQ(e1.context.sizes(), (std::vector<int64_t>{1, 154, 32}));
  EXPECT_FALSE(e1.pooled.defined());
  EXPECT_TRUE(torch::allclose(e1.context, encode_windows(l, windows(49407), 1, true).context, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(sd1.encode(prompt, 2).context, encode_windows(l, windows(49407), 2, true).context, 1e-6, 1e-6));
  EXPECT_NE(error_of([&] { sd1.encode(prompt, 4); }).find("clip skip 4 goes past"), std::string::npos);

  // SD2: 0 padding, penultimate layer then final layer norm; an encoder
  // already truncated there (diffusers' copy) uses its last layer, whatever
  // its depth.
  auto h = tiny_model(cfg(3, 32, 32), 6);
  auto e2 = TextEncoderSet::sd2(ClipTokenizer(vocab_dir()), h).encode(prompt);
  EXPECT_TRUE(torch::allclose(e2.context, encode_windows(h, windows(0), 2, true).context, 1e-6, 1e-6));
  EXPECT_FALSE(torch::allclose(e2.context, encode_windows(h, windows(49407), 2, true).context, 1e-3, 1e-3));
  for (int64_t depth : {23, 5}) {
    auto ht = tiny_model(cfg(depth, 32, 32), 7);
    EXPECT_TRUE(torch::allclose(TextEncoderSet::sd2(ClipTokenizer(vocab_dir()), ht, true).encode(prompt).context,
                                encode_windows(ht, windows(0), 1, true).context, 1e-6, 1e-6));
    EXPECT_TRUE(torch::allclose(TextEncoderSet::sd2(ClipTokenizer(vocab_dir()), ht).encode(prompt).context,
                                encode_windows(ht, windows(0), 2, true).context, 1e-6, 1e-6));
  }

  // SDXL: penultimate of both without the final norm, concatenated; pooled
  // from the second (0 padding) through its projection.
  auto g = tiny_model(cfg(4, 48, 40), 8);
  auto xl = TextEncoderSet::sdxl(ClipTokenizer(vocab_dir()), l, g);
  EXPECT_EQ(xl.context_dim(), 80);
  auto e3 = xl.encode(prompt);
  ASSERT_EQ(e3.context.sizes(), (std::vector<int64_t>{1, 154, 80}));
  ASSERT_EQ(e3.pooled.sizes(), (std::vector<int64_t>{1, 40}));
  auto first = encode_windows(l, windows(49407), 2, false);
  auto second = encode_windows(g, windows(0), 2, false, true);
  EXPECT_TRUE(torch::allclose(e3.context.slice(2, 0, 32), first.context, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(e3.context.slice(2, 32), second.context, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(e3.pooled, second.pooled, 1e-6, 1e-6));
  EXPECT_NE(error_of([&] { TextEncoderSet::sdxl(ClipTokenizer(vocab_dir()), l, tiny_model(cfg(2, 48, 0))); })
                .find("no text_projection"),
            std::string::npos);
}

// Prompt-to-Prompt's word indices: each word's token positions in the encoded context.
TEST(PromptWeighting, WordPositionsFollowTheChunks) {
  REQUIRE_TOKENIZER(tok);
  const auto w = prompt_word_positions(*tok, "a (red:1.3) cat, BREAK on a [mat]");
  ASSERT_EQ(w.size(), 6u);
  const std::vector<std::pair<std::string, std::vector<int64_t>>> want = {
      {"a", {1}}, {"red", {2}}, {"cat,", {3, 4}}, {"on", {78}}, {"a", {79}}, {"mat", {80}}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(w[i].text, want[i].first) << i;
    EXPECT_EQ(w[i].positions, want[i].second) << w[i].text;
  }
  // A long prompt: the words spill into the second window after its BOS, and every token has its word.
  std::string longp;
  for (int i = 0; i < 80; ++i) longp += "cat ";
  const auto l = prompt_word_positions(*tok, longp);
  ASSERT_EQ(l.size(), 80u);
  EXPECT_EQ(l[74].positions, (Ids{75}));
  EXPECT_EQ(l[75].positions, (Ids{78}));
  EXPECT_EQ(l[79].positions, (Ids{82}));
  // The chunks carry the same word of every token (comma backtracking moves words along).
  std::string commas;
  for (int i = 0; i < 40; ++i) commas += "red cat, ";
  size_t tokens = 0, placed = 0;
  for (const auto& c : chunk_prompt(*tok, commas)) {
    ASSERT_EQ(c.words.size(), c.tokens.size());
    tokens += c.tokens.size();
  }
  for (const auto& x : prompt_word_positions(*tok, commas)) placed += x.positions.size();
  EXPECT_EQ(placed, tokens);
}
