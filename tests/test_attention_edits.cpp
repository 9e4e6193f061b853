// The attention-control edits on a tiny SD1-structured model.
// Prompt-to-Prompt (edit/prompt_to_prompt.h):
// the token maps of word swap, refinement and reweighting on real prompts;
// with nothing injected the two rows are exactly the two prompts' own CFG
// generations from the same noise; inside the windows the target's maps are
// the source's mapped maps (self-attention only below the latent's
// resolution) and outside them its own; local blending leaves the target
// equal to the source outside its mask; direct inversion returns the input
// exactly; the CLI generates a source from a seed as `generate` does and
// refuses bad words by name.
// MasaCtrl (edit/masactrl.h): before its start step the rows are the two
// prompts' own samples; at the controlled layers and steps the target's
// keys are the source's, its own elsewhere; a hand-set cross-attention map
// gives the closed-form foreground/background split of the target's
// attention; the CLI runs it on inputs and seeds.
// Plug-and-Play (edit/plug_and_play.h): with nothing injected the rows are
// the prompts' own samples; the blocks found on the test UNet; inside the
// windows the target's features, queries and keys are the source's.
// FreeU (guide/freeu.h) on the same UNet: its filter on closed forms, the
// plain model at b = s = 1, parity with hand-installed hooks, the flag.
#include <unistd.h>

#include <filesystem>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "cli_testing.h"
#include "sd_testing.h"
#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/edit/masactrl.h"
#include "tweedie/edit/paired_sampling.h"
#include "tweedie/edit/plug_and_play.h"
#include "tweedie/edit/prompt_to_prompt.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/guide/freeu.h"
#include "tweedie/io/image.h"
#include "tweedie/models/clip_tokenizer.h"
#include "tweedie/models/sd_export.h"
#include "tweedie/pipelines/stable_diffusion.h"
#include "tweedie/process/schedule.h"
#include "tweedie/sample/sampler.h"

namespace tweedie {
namespace {

namespace fs = std::filesystem;

const std::string& model_dir() {
  static const std::string dir = testing::tiny_sd_folder("attention_edits_model", 31);
  return dir;
}

StableDiffusion& pipeline() {
  static StableDiffusion sd(model_dir());
  return sd;
}

template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

const std::string kSource = "a red coat at the top left", kTarget = "a blue coat at the top left";

struct Pair {
  Cond src, tgt;
  std::vector<PromptWord> ws, wt;
};
Pair prompts(const std::string& a, const std::string& b, int64_t n) {
  StableDiffusion& sd = pipeline();
  auto c = sd.conditions({a, b}, "", n, 16, 16);
  return {c[0], c[1], sd.word_positions(a), sd.word_positions(b)};
}

// The largest 8-bit difference between a grid's first 16x16 tile (after its 2-pixel border) and an image.
int first_tile_difference(const Image& grid, const Image& img) {
  int worst = 0;
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 16; ++x)
      for (int c = 0; c < 3; ++c)
        worst = std::max(worst, std::abs(int(grid.pixels[size_t(((y + 2) * grid.width + x + 2) * grid.channels + c)]) -
                                         int(img.pixels[size_t((y * img.width + x) * img.channels + c)])));
  return worst;
}

// While alive: the context tokens `word` attend only to the first query of the test UNet's 4x4 cross-attention
// layers (installed before an edit's own hooks, so the edit sees these maps).
std::unique_ptr<ScopedHook> focus_on_first_query(const std::vector<int64_t>& word) {
  return std::make_unique<ScopedHook>(pipeline().denoiser()->network().hooks(), "*attn2.probs",
                                      [word](const std::string&, const torch::Tensor& probs, const HookContext&) {
                                        if (probs.size(1) != 16) return probs;
                                        auto out = probs.clone();
                                        for (int64_t t : word) {
                                          out.select(2, t).zero_();
                                          out.select(2, t).select(1, 0).fill_(0.5);
                                        }
                                        return out;
                                      });
}

torch::Tensor noise(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randn({n, 4, 8, 8});
}

TEST(P2PTokenMaps, WordSwapRefinementAndReweightOnRealPrompts) {
  const ClipTokenizer tok(testing::kTokenizer);
  const int64_t L = 77;
  auto words = [&](const std::string& p) { return prompt_word_positions(tok, p); };
  // The same prompt maps every position to itself.
  const TokenMapping same = p2p_word_swap(words(kSource), words(kSource), L);
  EXPECT_TRUE(torch::equal(same.mapper, torch::eye(L)));
  EXPECT_TRUE(torch::equal(same.alpha, torch::ones({L})));
  // A swap: unchanged words one to one, the swapped word's mass kept whole.
  const auto ws = words(kSource), wt = words(kTarget);
  const TokenMapping swap = p2p_word_swap(ws, wt, L);
  for (size_t k = 0; k < ws.size(); ++k) {
    if (ws[k].text == wt[k].text) {
      for (size_t t = 0; t < ws[k].positions.size(); ++t)
        EXPECT_EQ(swap.mapper[ws[k].positions[t]][wt[k].positions[t]].item<float>(), 1.0f) << ws[k].text;
    } else {
      for (int64_t i : ws[k].positions) EXPECT_NEAR(swap.mapper[i].sum().item<float>(), 1.0, 1e-6) << ws[k].text;
      for (int64_t j : wt[k].positions) EXPECT_GT(swap.mapper.select(1, j).sum().item<float>(), 0) << wt[k].text;
    }
  }
  // BOS to BOS, EOS to EOS, and every source token below the end keeps its whole mass.
  EXPECT_EQ(swap.mapper[0][0].item<float>(), 1.0f);
  const int64_t eos_s = ws.back().positions.back() + 1, eos_t = wt.back().positions.back() + 1;
  EXPECT_EQ(swap.mapper[eos_s][eos_t].item<float>(), 1.0f);
  for (int64_t i = 0; i < L - std::max<int64_t>(0, eos_t - eos_s); ++i)
    EXPECT_NEAR(swap.mapper[i].sum().item<float>(), 1.0, 1e-6) << "source token " << i;
  EXPECT_NE(error_of([&] { p2p_word_swap(ws, words("a red wool coat at the top left"), L); })
                .find("a word swap needs prompts of the same number of words (source 7, target 8)"),
            std::string::npos);

  // Refinement: an added word keeps its own map (alpha 0), the aligned words map token to token.
  const auto wr = words("a red wool coat at the top left");
  const TokenMapping refine = p2p_refinement(ws, wr, L);
  std::set<int64_t> wool(wr[2].positions.begin(), wr[2].positions.end());
  for (int64_t j = 0; j < L; ++j) EXPECT_EQ(refine.alpha[j].item<float>(), wool.count(j) ? 0.0f : 1.0f) << j;
  for (size_t t = 0; t < ws[2].positions.size(); ++t)  // "coat"
    EXPECT_EQ(refine.mapper[ws[2].positions[t]][wr[3].positions[t]].item<float>(), 1.0f);
  EXPECT_EQ(refine.mapper[eos_s][wr.back().positions.back() + 1].item<float>(), 1.0f);
  // A removed word: every target token has a source.
  const TokenMapping fewer = p2p_refinement(ws, words("a coat at the top left"), L);
  EXPECT_TRUE(torch::equal(fewer.alpha, torch::ones({L})));
  EXPECT_TRUE((fewer.mapper.sum(0) > 0).all().item<bool>());

  // Reweighting the target's words.
  const torch::Tensor eq = p2p_reweight(wt, "blue=2, coat=0.5", L);
  for (int64_t j = 0; j < L; ++j) {
    const bool blue = std::count(wt[1].positions.begin(), wt[1].positions.end(), j) > 0;
    const bool coat = std::count(wt[2].positions.begin(), wt[2].positions.end(), j) > 0;
    EXPECT_EQ(eq[j].item<float>(), blue ? 2.0f : coat ? 0.5f : 1.0f) << j;
  }
  EXPECT_EQ(error_of([&] { p2p_reweight(wt, "red=2", L); }), "p2p: --p2p-reweight word 'red' is not in the target prompt");
  EXPECT_EQ(error_of([&] { p2p_reweight(wt, "blue", L); }),
            "p2p: --p2p-reweight takes word=factor[,word=factor...], got 'blue'");
  EXPECT_EQ(error_of([&] { p2p_reweight(wt, "blue=x2", L); }), "p2p: --p2p-reweight factor of 'blue' is not a number: 'x2'");
  std::vector<int64_t> both = ws[1].positions;
  both.insert(both.end(), ws[2].positions.begin(), ws[2].positions.end());
  EXPECT_EQ(prompt_word_tokens(ws, "red, COAT"), both);
  EXPECT_TRUE(prompt_word_tokens(ws, "blue").empty());
}

// Sample with P2P from unit noise.
PromptToPromptResult run(const Pair& p, const torch::Tensor& z, const std::vector<double>& sig, PromptToPromptOptions o) {
  torch::NoGradGuard ng;
  return prompt_to_prompt(pipeline().denoiser(), sig, z, true, p.src, p.tgt, p.ws, p.wt, o);
}

TEST(P2P, WithNothingInjectedTheRowsAreTheTwoPromptsOwnGenerations) {
  const Pair p = prompts(kSource, kTarget, 2);
  const auto z = noise(2, 3);
  const auto sig = make_schedule("karras", pipeline().process(), 5);
  PromptToPromptOptions o;
  o.pair.cfg = 3, o.cross_replace = 0, o.self_replace = 0;
  const PromptToPromptResult r = run(p, z, sig, o);
  torch::NoGradGuard ng;
  auto own = [&](const Cond& c) {
    CFGDenoiser d(pipeline().denoiser(), 3.0);
    SamplerRun sr(d, sig, c);
    return run_sampler(find_sampler("ddim"), sr, z.to(torch::kFloat64) * sig.front());
  };
  EXPECT_LT((r.source - own(p.src)).abs().max().item<double>(), 1e-4);
  EXPECT_LT((r.edited - own(p.tgt)).abs().max().item<double>(), 1e-4);
  EXPECT_GT((r.edited - r.source).abs().max().item<double>(), 1e-2);  // the prompts differ
  EXPECT_FALSE(r.mask.defined());
}

TEST(P2P, TheTargetTakesTheSourceMapsInsideTheWindowsOnly) {
  const Pair p = prompts(kSource, kTarget, 2);
  const auto z = noise(2, 4);
  const auto sig = make_schedule("karras", pipeline().process(), 5);
  const TokenMapping map = p2p_word_swap(p.ws, p.wt, p.src.context.size(1));
  PromptToPromptOptions o;
  o.pair.cfg = 3, o.cross_replace = 0.6, o.self_replace = 0.4;  // steps 0-2 and 0-1 of 5
  std::map<std::pair<bool, bool>, int> seen;  // (cross, inside) -> calls
  std::set<int64_t> self_sizes, cross_sizes;
  o.on_attention = [&](const std::string& site, int step, bool cross, const torch::Tensor& S, const torch::Tensor& T) {
    ASSERT_EQ(S.size(0), 2) << site;
    const bool inside = step < (cross ? 3 : 2);
    ++seen[{cross, inside}];
    (cross ? cross_sizes : self_sizes).insert(S.size(2));
    const torch::Tensor want = cross ? torch::matmul(S, map.mapper) : S;
    const double d = (T - want).abs().max().item<double>();
    if (inside)
      EXPECT_LT(d, 1e-6) << site << " step " << step;
    else
      EXPECT_GT(d, 1e-4) << site << " step " << step;
  };
  const PromptToPromptResult r = run(p, z, sig, o);
  EXPECT_GT((seen[{true, true}]), 0);
  EXPECT_GT((seen[{true, false}]), 0);
  EXPECT_GT((seen[{false, true}]), 0);
  EXPECT_GT((seen[{false, false}]), 0);
  // Cross-attention is controlled at every resolution (8x8 and 4x4 here), self-attention below the latent's (4x4).
  EXPECT_EQ(cross_sizes, (std::set<int64_t>{16, 64}));
  EXPECT_EQ(self_sizes, (std::set<int64_t>{16}));
  // The injection changes the target and leaves the source as it was.
  PromptToPromptOptions none;
  none.pair.cfg = 3, none.cross_replace = 0, none.self_replace = 0;
  const PromptToPromptResult plain = run(p, z, sig, none);
  EXPECT_LT((r.source - plain.source).abs().max().item<double>(), 1e-4);  // (explicit vs chunked attention)
  EXPECT_GT((r.edited - plain.edited).abs().max().item<double>(), 1e-3);
  // Reweighting scales the target's columns of the word (here the same prompt twice).
  const Pair same = prompts(kTarget, kTarget, 1);
  PromptToPromptOptions rw;
  rw.pair.cfg = 3, rw.reweight = "blue=3";
  rw.on_attention = [&](const std::string& site, int step, bool cross, const torch::Tensor& S, const torch::Tensor& T) {
    if (!cross || step >= 4) return;
    for (int64_t j : same.wt[1].positions)
      EXPECT_LT((T.select(3, j) - 3 * S.select(3, j)).abs().max().item<double>(), 1e-6) << site;
    EXPECT_LT((T.select(3, 0) - S.select(3, 0)).abs().max().item<double>(), 1e-6) << site;
  };
  run(same, noise(1, 5), sig, rw);
}

TEST(P2P, LocalBlendingMasksWhereTheWordsAttendAndKeepsTheSourceOutside) {
  const Pair p = prompts(kSource, kTarget, 2);
  const auto sig = make_schedule("karras", pipeline().process(), 5);
  // The random model's maps are nearly flat; a hook added before P2P's makes
  // the colour word ("red" / "blue", word 1 of both prompts) attend only to
  // the first query of the 4x4 layers (the maps nearest a quarter of the
  // 8x8 latent). Bilinear to 8x8, the profile along each axis is
  // 1, .75, .25, 0, ...; max-pooled 3x3 (k = 1 at side 8) 1, 1, .75, .25,
  // 0, ...; above 0.3 in both: the top-left 3x3 of the latent.
  const std::vector<int64_t> word = p.ws[1].positions;
  const auto focus = focus_on_first_query(word);
  PromptToPromptOptions o;
  o.pair.cfg = 3, o.blend = "red,blue";
  const PromptToPromptResult r = run(p, noise(2, 6), sig, o);
  ASSERT_TRUE(r.mask.defined());
  auto want = torch::zeros({2, 1, 8, 8}, torch::kFloat64);
  want.slice(2, 0, 3).slice(3, 0, 3).fill_(1);
  EXPECT_TRUE(torch::equal(r.mask, want)) << r.mask;
  EXPECT_EQ(((r.edited - r.source) * (1 - r.mask)).abs().max().item<double>(), 0.0);
  EXPECT_GT(((r.edited - r.source) * r.mask).abs().max().item<double>(), 1e-3);
  PromptToPromptOptions bad = o;
  bad.blend = "red,green";
  EXPECT_EQ(error_of([&] { run(p, noise(2, 6), sig, bad); }), "p2p: the blend word 'green' is in neither prompt");
}

TEST(P2P, RealImagesDirectInversionReturnsTheInputExactly) {
  const Pair p = prompts(kSource, kTarget, 2);
  torch::manual_seed(7);
  const auto x = torch::randn({2, 4, 8, 8}, torch::kFloat64);
  const auto sig = make_schedule("karras", pipeline().process(), 6);
  torch::NoGradGuard ng;
  auto edit = [&](const std::string& inversion) {
    PromptToPromptOptions o;
    o.pair.cfg = 5, o.pair.inversion = inversion;
    return prompt_to_prompt(pipeline().denoiser(), sig, x, false, p.src, p.tgt, p.ws, p.wt, o);
  };
  const PromptToPromptResult direct = edit("direct"), ddim = edit("ddim");
  const double e_direct = (direct.source - x).abs().max().item<double>(), e_ddim = (ddim.source - x).abs().max().item<double>();
  EXPECT_LT(e_direct, 1e-9);
  EXPECT_GT(e_ddim, 1e-3);  // DDIM inversion at w = 1 decoded at w = 5 drifts
  EXPECT_GT((direct.edited - x).abs().max().item<double>(), 1e-3);
  for (const char* inv : {"null-text", "negative-prompt"}) {
    const PromptToPromptResult r = edit(inv);
    EXPECT_TRUE(torch::isfinite(r.edited).all().item<bool>()) << inv;
    EXPECT_LT((r.source - x).abs().max().item<double>(), e_ddim) << inv;  // both follow the w = 1 path better
  }
  PromptToPromptOptions bad;
  bad.pair.inversion = "edict";
  EXPECT_EQ(error_of([&] { prompt_to_prompt(pipeline().denoiser(), sig, x, false, p.src, p.tgt, p.ws, p.wt, bad); }),
            "p2p: --inversion must be direct, ddim, null-text or negative-prompt (got 'edict')");
}

TEST(P2PCLI, GeneratesTheSourceAsGenerateDoesAndRefusesBadWords) {
  using testing::cli;
  using testing::expect_error;
  const std::string out = ::testing::TempDir() + "/p2p_cli.png", gen = ::testing::TempDir() + "/p2p_gen.png";
  const std::string common = " -m " + model_dir() + " --sampler ddim --schedule karras -s 4 --cfg 3 --seed 5 -W 16 -H 16 -q ";
  auto r = cli("edit" + common + "--method p2p --source-prompt \"" + kSource + "\" --target-prompt \"" + kTarget +
               "\" -o " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  auto g = cli("generate" + common + "-p \"" + kSource + "\" -o " + gen);
  ASSERT_EQ(g.code, 0) << g.out;
  const Image grid = read_png(out), img = read_png(gen);
  ASSERT_EQ(grid.width, 16 + 2 * 2);
  ASSERT_EQ(grid.height, 2 * 16 + 3 * 2);  // source row, edited row
  const int worst = first_tile_difference(grid, img);
  EXPECT_LE(worst, 1);
  r = cli("edit" + common + "--method p2p --source-prompt \"" + kSource + "\" --target-prompt \"" + kTarget +
          "\" --blend red,blue -n 2 -o " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("the mask covers"), std::string::npos) << r.out;
  EXPECT_EQ(read_png(out).height, 3 * 16 + 4 * 2);  // source, edited, mask
  const std::string m = "edit -m " + model_dir() + " --source-prompt \"" + kSource + "\" --target-prompt \"" + kTarget +
                        "\" -o " + out + " ";
  expect_error(m + "--method p2p --p2p-reweight coat=2,hat=3", "p2p: --p2p-reweight word 'hat' is not in the target prompt");
  expect_error(m + "--method p2p --blend hat", "p2p: the blend word 'hat' is in neither prompt");
  expect_error(m + "--method p2p --cross-replace 2", "--cross-replace must be in [0, 1] (got 2)");
  expect_error(m + "--method p2p --strength 0.5", "--strength applies to --input images");
  expect_error(m + "--method p2p --p2p-mode swap", "--p2p-mode must be auto, replace or refine (got 'swap')");
  expect_error(m + "--method sdedit", "--method sdedit edits images: give --input (masactrl, p2p, pnp can generate the source from --seed)");
  expect_error(m + "--method sdedit --blend red -i /nonexistent.png", "--blend applies to p2p only, not sdedit");
  expect_error("edit --method p2p --to 1 -o " + out, "needs a text model");
}

MasaCtrlResult run_masa(const Pair& p, const torch::Tensor& z, const std::vector<double>& sig, MasaCtrlOptions o) {
  torch::NoGradGuard ng;
  return masactrl(pipeline().denoiser(), sig, z, true, p.src, p.tgt, p.ws, p.wt, o);
}

TEST(MasaCtrl, BeforeItsStartTheRowsAreTheTwoPromptsOwnSamples) {
  const Pair p = prompts(kSource, kTarget, 2);
  const auto z = noise(2, 3);
  const auto sig = make_schedule("karras", pipeline().process(), 5);
  MasaCtrlOptions o;
  o.pair.cfg = 3, o.start_step = 1;  // never starts
  const MasaCtrlResult never = run_masa(p, z, sig, o);
  PromptToPromptOptions none;  // P2P with nothing injected: the two prompts' own samples (tested above)
  none.pair.cfg = 3, none.cross_replace = 0, none.self_replace = 0;
  const PromptToPromptResult own = run(p, z, sig, none);
  EXPECT_LT((never.source - own.source).abs().max().item<double>(), 1e-4);
  EXPECT_LT((never.edited - own.edited).abs().max().item<double>(), 1e-4);
  // Controlled from step 1 at the default layers (10/16 of them): the source is untouched, the target changes.
  o.start_step = 0.2;
  const MasaCtrlResult r = run_masa(p, z, sig, o);
  EXPECT_FALSE(r.layers.empty());
  EXPECT_LT((r.source - own.source).abs().max().item<double>(), 1e-4);
  EXPECT_GT((r.edited - own.edited).abs().max().item<double>(), 1e-3);
}

TEST(MasaCtrl, TheTargetUsesTheSourceKeysAtTheControlledLayersAndStepsOnly) {
  const Pair p = prompts(kSource, kTarget, 2);
  const auto sig = make_schedule("karras", pipeline().process(), 5);
  MasaCtrlOptions o;
  o.pair.cfg = 3, o.start_step = 0.4, o.start_layer = "1";  // steps 2-4, layers 1..
  std::set<std::string> sites;
  std::set<int> steps;
  o.on_attention = [&](const std::string& site, int step, const torch::Tensor& S, const torch::Tensor& T) {
    sites.insert(site);
    steps.insert(step);
    ASSERT_EQ(S.size(0), 4);  // both rows of both CFG branches
    if (step >= 2)
      EXPECT_TRUE(torch::equal(S, T)) << site << " step " << step;
    else
      EXPECT_GT((S - T).abs().max().item<double>(), 1e-4) << site << " step " << step;
  };
  const MasaCtrlResult r = run_masa(p, noise(2, 8), sig, o);
  EXPECT_EQ(steps, (std::set<int>{0, 1, 2, 3, 4}));
  std::set<std::string> want;
  for (const std::string& l : r.layers) want.insert(l + ".k");
  EXPECT_EQ(sites, want);
  // Layer 0 is not controlled; every later one is.
  const auto all = self_attention_layers(*pipeline().denoiser(), noise(1, 0), sig.front(), p.src);
  ASSERT_EQ(r.layers.size() + 1, all.size());
  for (size_t i = 1; i < all.size(); ++i) EXPECT_EQ(r.layers[i - 1], all[i].site);
  o.start_layer = "99";
  EXPECT_EQ(error_of([&] { run_masa(p, noise(2, 8), sig, o); }),
            "masactrl: --masa-layer must be auto or a layer index in [0, " + std::to_string(all.size()) + ") (got '99')");
}

TEST(MasaCtrl, MasksSplitTheTargetsAttentionIntoForegroundAndBackground) {
  const Pair p = prompts(kSource, kTarget, 1);
  const auto sig = make_schedule("karras", pipeline().process(), 4);
  // The colour word attends only to query 0 of the 4x4 cross-attention
  // (the maps nearest a quarter of the 8x8 latent): both masks are that one
  // position at 4x4.
  const std::vector<int64_t> word = p.ws[1].positions;
  const auto focus = focus_on_first_query(word);
  MasaCtrlOptions o;
  o.pair.cfg = 3, o.start_step = 0, o.start_layer = "0", o.mask = "red,blue";
  int checked = 0;
  o.on_attention = [&](const std::string& site, int, const torch::Tensor&, const torch::Tensor& T) {
    if (site.size() < 6 || site.compare(site.size() - 6, 6, ".probs") != 0 || T.size(2) != 16) return;
    // Query 0 (foreground) attends only to key 0; every other query only to keys 1..15.
    EXPECT_LT((T.select(2, 0).select(2, 0) - 1).abs().max().item<double>(), 1e-5) << site;
    EXPECT_EQ(T.slice(2, 1, 16).select(3, 0).abs().max().item<double>(), 0.0) << site;
    EXPECT_LT((T.sum(3) - 1).abs().max().item<double>(), 1e-5) << site;
    ++checked;
  };
  run_masa(p, noise(1, 9), sig, o);
  EXPECT_GT(checked, 0);
  o.mask = "hat";
  EXPECT_EQ(error_of([&] { run_masa(p, noise(1, 9), sig, o); }), "masactrl: the mask word 'hat' is in neither prompt");
}

TEST(MasaCtrl, CommandLineOnASeedAndAnInput) {
  using testing::cli;
  const std::string out = ::testing::TempDir() + "/masa_cli.png", in = ::testing::TempDir() + "/masa_in.png";
  torch::manual_seed(2);
  write_png(in, tensor_to_image(torch::rand({3, 16, 16}) * 2 - 1));
  const std::string common = "edit -m " + model_dir() + " --method masactrl -s 4 --cfg 3 -q --source-prompt \"" +
                             kSource + "\" --target-prompt \"" + kTarget + "\" -o " + out;
  auto r = cli(common + " -W 16 -H 16 --masa-mask red,blue");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(read_png(out).height, 2 * 16 + 3 * 2);
  r = cli(common + " -i " + in + " --masa-step 0 --masa-layer 0");
  ASSERT_EQ(r.code, 0) << r.out;
  // Direct inversion: the source row is the input itself.
  const Image grid = read_png(out), img = read_png(in);
  const int worst = first_tile_difference(grid, img);
  EXPECT_EQ(worst, 0);
  testing::expect_error(common + " --masa-threshold 2", "--masa-threshold must be in [0, 1] (got 2)");
  testing::expect_error(common + " --cross-replace 0.5", "--cross-replace applies to p2p only, not masactrl");
}

TEST(PlugAndPlay, InjectsTheSourceFeaturesAndQueriesKeysInsideTheWindows) {
  const Pair p = prompts(kSource, kTarget, 2);
  const auto z = noise(2, 3);
  const auto sig = make_schedule("karras", pipeline().process(), 5);
  PlugAndPlayOptions o;
  o.pair.cfg = 3, o.features = 0, o.attention = 0;
  torch::NoGradGuard ng;
  const PlugAndPlayResult none = plug_and_play(pipeline().denoiser(), sig, z, true, p.src, p.tgt, o);
  PromptToPromptOptions own;
  own.pair.cfg = 3, own.cross_replace = 0, own.self_replace = 0;
  const PromptToPromptResult ref = run(p, z, sig, own);
  EXPECT_LT((none.source - ref.source).abs().max().item<double>(), 1e-4);
  EXPECT_LT((none.edited - ref.edited).abs().max().item<double>(), 1e-4);
  // The blocks: the decoder's second stage's second residual block, and the self-attention layers from it on.
  const auto blocks = visited_sites(*pipeline().denoiser(), "output_blocks.*", z, sig.front(), p.src);
  std::vector<std::pair<std::string, int64_t>> res;  // decoder residual blocks and their heights
  for (const SiteShape& s : blocks)
    if (s.site.size() > 6 && s.site.compare(s.site.size() - 6, 6, ".0.out") == 0) res.push_back({s.site, s.shape[2]});
  ASSERT_GE(res.size(), 4u);
  std::vector<std::string> stage1;  // the blocks at the decoder's second resolution
  int64_t second = -1;
  for (const auto& [site, h] : res) {
    if (h != res.front().second && second < 0) second = h;
    if (h == second) stage1.push_back(site);
  }
  ASSERT_GE(stage1.size(), 2u);
  o.features = 0.6, o.attention = 0.4;  // steps 0-2 and 0-1 of 5
  std::map<std::string, std::set<int>> inside;
  o.on_inject = [&](const std::string& site, int step, const torch::Tensor& S, const torch::Tensor& T) {
    const bool feature = site == stage1[1];
    const bool in = step < (feature ? 3 : 2);
    if (in) {
      EXPECT_TRUE(torch::equal(S, T)) << site << " step " << step;
      inside[site].insert(step);
    } else if (step >= 3) {  // outside both windows (inside the feature window the rest follows the features)
      EXPECT_GT((S - T).abs().max().item<double>(), 1e-5) << site << " step " << step;
    }
  };
  const PlugAndPlayResult r = plug_and_play(pipeline().denoiser(), sig, z, true, p.src, p.tgt, o);
  EXPECT_EQ(r.feature_site, stage1[1]);
  EXPECT_EQ(inside[r.feature_site], (std::set<int>{0, 1, 2}));
  ASSERT_FALSE(r.attention_layers.empty());
  for (const std::string& l : r.attention_layers) {
    EXPECT_EQ(l.rfind("output_blocks.", 0), 0u) << l;
    EXPECT_EQ(inside[l + ".q"], (std::set<int>{0, 1})) << l;
    EXPECT_EQ(inside[l + ".k"], (std::set<int>{0, 1})) << l;
  }
  EXPECT_LT((r.source - ref.source).abs().max().item<double>(), 1e-4);  // the source is untouched
  EXPECT_GT((r.edited - ref.edited).abs().max().item<double>(), 1e-3);
  // On the command line: an input, no source prompt (the empty prompt, as the paper).
  const std::string in = ::testing::TempDir() + "/pnp_in.png", out = ::testing::TempDir() + "/pnp.png";
  torch::manual_seed(3);
  write_png(in, tensor_to_image(torch::rand({3, 16, 16}) * 2 - 1));
  auto c = testing::cli("edit -m " + model_dir() + " --method pnp -i " + in + " --target-prompt \"" + kTarget +
                        "\" -s 4 -q -o " + out);
  ASSERT_EQ(c.code, 0) << c.out;
  EXPECT_EQ(read_png(out).height, 2 * 16 + 3 * 2);
  testing::expect_error("edit -m " + model_dir() + " --method pnp -i " + in + " --target-prompt a --pnp-features 1.5 -o " +
                            out,
                        "--pnp-features must be in [0, 1] (got 1.5)");
}

TEST(FreeU, TheFourierFilterOnClosedForms) {
  torch::manual_seed(1);
  const auto x = torch::randn({2, 3, 8, 8});
  EXPECT_TRUE(torch::equal(freeu_fourier_filter(x, 1.0), x));
  // A constant image is all zero frequency: scaled.
  EXPECT_LT((freeu_fourier_filter(torch::full({1, 2, 8, 8}, 0.7), 0.2) - 0.14).abs().max().item<double>(), 1e-6);
  // The Nyquist checkerboard lies outside the box: untouched.
  const auto i = torch::arange(8).view({8, 1}), j = torch::arange(8).view({1, 8});
  const auto board = ((i + j).remainder(2) * 2 - 1).to(torch::kFloat32).expand({1, 1, 8, 8});
  EXPECT_LT((freeu_fourier_filter(board, 0.2) - board).abs().max().item<double>(), 1e-6);
  // cos(2 pi j / 8) = (e^{i t} + e^{-i t}) / 2: the box holds frequency -1 only, so the real part keeps (1 + s) / 2 of it.
  const auto wave = torch::cos(j.to(torch::kFloat64) * (2 * M_PI / 8)).to(torch::kFloat32).expand({1, 1, 8, 8});
  EXPECT_LT((freeu_fourier_filter(wave, 0.2) - 0.6 * wave).abs().max().item<double>(), 1e-6);
}

TEST(FreeU, EqualsHandInstalledHooksAndIsThePlainModelAtOne) {
  auto net = pipeline().denoiser();
  const Pair p = prompts(kSource, kSource, 2);
  const auto x = noise(2, 11) * 3;
  const double s = 2.0;
  torch::NoGradGuard ng;
  const auto plain = net->predict(x, s, p.src).x0();
  FreeUDenoiser one(net, {1, 1, 1, 1});
  EXPECT_LT((one.predict(x, s, p.src).x0() - plain).abs().max().item<double>(), 1e-5);
  // By hand on the test UNet (channel_mult 1-2, one residual block per level): output blocks 0 and 1 run at the
  // lowest resolution (4x4) with skips 3 and 2, blocks 2 and 3 at 8x8 with skips 1 and 0.
  const std::map<std::string, double> b = {
      {"output_blocks.0.in", 1.5}, {"output_blocks.1.in", 1.5}, {"output_blocks.2.in", 1.6}, {"output_blocks.3.in", 1.6}};
  const std::map<std::string, double> sk = {{"skip.3", 0.9}, {"skip.2", 0.9}, {"skip.1", 0.2}, {"skip.0", 0.2}};
  torch::Tensor want;
  {
    Hooks& hk = net->network().hooks();
    ScopedHook hb(hk, "output_blocks.*", [&](const std::string& site, const torch::Tensor& h, const HookContext&) {
      auto it = b.find(site);
      if (it == b.end()) return h;
      auto o = h.clone();
      o.slice(1, 0, h.size(1) / 2).mul_(it->second);
      return o;
    });
    ScopedHook hs(hk, "skip.*", [&](const std::string& site, const torch::Tensor& v, const HookContext&) {
      return freeu_fourier_filter(v, sk.at(site));
    });
    want = net->predict(x, s, p.src).x0();
  }
  FreeUDenoiser freeu(net, parse_freeu("sd1"));
  const auto got = freeu.predict(x, s, p.src).x0();
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-6);
  EXPECT_GT((got - plain).abs().max().item<double>(), 1e-3);
  // The network is left as it was.
  EXPECT_LT((net->predict(x, s, p.src).x0() - plain).abs().max().item<double>(), 1e-6);
  EXPECT_EQ(error_of([] { parse_freeu("1,2"); }),
            "--freeu takes B1,B2,S1,S2 (e.g. 1.5,1.6,0.9,0.2) or a preset (sd1, sd2, sdxl), got '1,2'");
  // generate --freeu
  const std::string out = ::testing::TempDir() + "/freeu.png";
  auto r = testing::cli("generate -m " + model_dir() + " -p \"" + kSource + "\" --freeu sd1 -s 2 -W 16 -H 16 -q -o " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  testing::expect_error("generate -m " + model_dir() + " -p a --freeu 1.5,x,1,1 -s 2 -o " + out, "--freeu takes B1,B2,S1,S2");
}

}  // namespace
}  // namespace tweedie
