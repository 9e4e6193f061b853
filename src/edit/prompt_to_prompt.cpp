// Prompt-to-Prompt (Hertz et al. 2023): the source's attention injected into
// the target's sampling (edit/prompt_to_prompt.h has the math). Verified in
// tests/test_attention_edits.cpp: the token maps on real prompts; with no
// injection the two rows are exactly the two prompts' own generations; the
// target's maps equal the source's mapped maps inside the windows and its
// own outside; outside the blend mask the target is the source; direct
// inversion gives the input back exactly.
#include "tweedie/edit/prompt_to_prompt.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <memory>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/edit/edit_method.h"
#include "tweedie/edit/paired_sampling.h"

namespace tweedie {

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The last context position of the words (0 when there are none: only BOS),
// checking that every word has tokens inside one window of `length`.
int64_t last_word_position(const std::vector<PromptWord>& words, int64_t length, const char* which) {
  int64_t last = 0;
  for (const PromptWord& w : words) {
    check(!w.positions.empty(), "p2p: the ", which, " word '", w.text, "' has no tokens of its own (plain words only)");
    for (int64_t p : w.positions) last = std::max(last, p);
  }
  check(last + 1 < std::min<int64_t>(length, 77), "p2p: the ", which,
        " prompt must fit one 77-token window (Prompt-to-Prompt maps token to token)");
  return last;
}

// BOS to BOS, and the end tokens (EOS, padding) position to position after each prompt's last word.
void map_ends(TokenMapping& m, int64_t last_src, int64_t last_tgt, int64_t length) {
  auto M = m.mapper.accessor<float, 2>();
  M[0][0] = 1;
  for (int64_t j = last_tgt + 1; j < length; ++j) M[std::min(length - 1, last_src + 1 + (j - last_tgt - 1))][j] = 1;
}

TokenMapping empty_mapping(int64_t length) {
  return {torch::zeros({length, length}), torch::ones({length})};
}

// Word k of the source onto word k of the target: one to one, or the source's mass spread evenly.
void map_word(TokenMapping& m, const PromptWord& s, const PromptWord& t) {
  auto M = m.mapper.accessor<float, 2>();
  if (s.positions.size() == t.positions.size()) {
    for (size_t i = 0; i < s.positions.size(); ++i) M[s.positions[i]][t.positions[i]] = 1;
    return;
  }
  const float share = 1.0f / float(t.positions.size());
  for (int64_t i : s.positions)
    for (int64_t j : t.positions) M[i][j] = share;
}

}  // namespace

TokenMapping p2p_word_swap(const std::vector<PromptWord>& source, const std::vector<PromptWord>& target,
                           int64_t length) {
  check(source.size() == target.size(), "p2p: a word swap needs prompts of the same number of words (source ",
        source.size(), ", target ", target.size(), "); refinement (--p2p-mode refine) aligns prompts that add words");
  const int64_t ls = last_word_position(source, length, "source"), lt = last_word_position(target, length, "target");
  TokenMapping m = empty_mapping(length);
  for (size_t k = 0; k < source.size(); ++k) map_word(m, source[k], target[k]);
  map_ends(m, ls, lt, length);
  return m;
}

TokenMapping p2p_refinement(const std::vector<PromptWord>& source, const std::vector<PromptWord>& target,
                            int64_t length) {
  const int64_t ls = last_word_position(source, length, "source"), lt = last_word_position(target, length, "target");
  const size_t n = source.size(), m = target.size();
  // Global alignment of the words (match +1, mismatch -1, gap 0).
  std::vector<std::vector<int>> score(n + 1, std::vector<int>(m + 1, 0));
  auto same = [&](size_t i, size_t j) { return lower(source[i].text) == lower(target[j].text); };
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= m; ++j)
      score[i][j] = std::max({score[i - 1][j - 1] + (same(i - 1, j - 1) ? 1 : -1), score[i - 1][j], score[i][j - 1]});
  TokenMapping map = empty_mapping(length);
  size_t i = n, j = m;
  while (i > 0 && j > 0) {
    if (same(i - 1, j - 1) && score[i][j] == score[i - 1][j - 1] + 1) {
      map_word(map, source[i - 1], target[j - 1]);
      --i, --j;
    } else if (score[i][j] == score[i - 1][j]) {
      --i;
    } else {
      --j;
    }
  }
  auto A = map.alpha.accessor<float, 1>();
  auto M = map.mapper.accessor<float, 2>();
  for (const PromptWord& w : target)  // words with no counterpart keep their own maps
    for (int64_t p : w.positions) {
      bool mapped = false;
      for (int64_t r = 0; r < length && !mapped; ++r) mapped = M[r][p] != 0;
      if (!mapped) A[p] = 0;
    }
  map_ends(map, ls, lt, length);
  return map;
}

torch::Tensor p2p_reweight(const std::vector<PromptWord>& target, const std::string& spec, int64_t length) {
  torch::Tensor eq = torch::ones({length});
  for (const std::string& item : comma_list(spec)) {
    const size_t at = item.find('=');
    check(at != std::string::npos && at > 0, "p2p: --p2p-reweight takes word=factor[,word=factor...], got '", item, "'");
    const std::string word = lower(comma_list(item.substr(0, at))[0]);
    double factor = 0;
    try {
      size_t used = 0;
      factor = std::stod(item.substr(at + 1), &used);
      check(used == item.size() - at - 1, "");
    } catch (...) {
      throw Error("p2p: --p2p-reweight factor of '" + word + "' is not a number: '" + item.substr(at + 1) + "'");
    }
    check(std::isfinite(factor), "p2p: --p2p-reweight factor of '", word, "' must be finite");
    bool found = false;
    for (const PromptWord& w : target)
      if (lower(w.text) == word) {
        found = true;
        for (int64_t p : w.positions) {
          check(p < length, "p2p: the target prompt is longer than its context");
          eq[p] = factor;
        }
      }
    check(found, "p2p: --p2p-reweight word '", word, "' is not in the target prompt");
  }
  return eq;
}

namespace {


// The attention control: hooks on the network's attention probabilities
// while it lives, and the local-blend maps they accumulate.
class Control {
 public:
  using Observer = decltype(PromptToPromptOptions::on_attention);
  Control(Network& net, TokenMapping map, torch::Tensor reweight, int cross_steps, int self_steps,
          std::vector<std::string> self_sites, std::vector<int64_t> blend_src, std::vector<int64_t> blend_tgt,
          int64_t latent_h, int64_t latent_w, Observer observe)
      : observe_(std::move(observe)), map_(std::move(map)), eq_(std::move(reweight)), cross_steps_(cross_steps), self_steps_(self_steps),
        blend_src_(std::move(blend_src)), blend_tgt_(std::move(blend_tgt)), lh_(latent_h), lw_(latent_w) {
    hooks_.push_back(std::make_unique<ScopedHook>(
        net.hooks(), "*attn2.probs",
        [this](const std::string& site, const torch::Tensor& p, const HookContext& ctx) { return cross(site, p, ctx); }));
    for (const std::string& site : self_sites)
      hooks_.push_back(share_source_rows(net.hooks(), site, [this](int step) { return step >= 0 && step < self_steps_; },
                                         true, observe_ ? [this](const std::string& site, int step, const torch::Tensor& S,
                                                                 const torch::Tensor& T) { observe_(site, step, false, S, T); }
                                                        : PairObserver()));
  }
  Control(const Control&) = delete;
  Control& operator=(const Control&) = delete;

  int cross_calls = 0;  // cross-attention sites edited (a model without them is an error)
  // The blend words' maps [N, h, w] of the source and of the target, summed
  // over layers and steps, at the resolution nearest a quarter of the
  // latent's side (the paper's 16x16 for SD at 512; ties: the finer).
  std::pair<torch::Tensor, torch::Tensor> blend_maps() const {
    check(!maps_.empty(), "p2p --blend: no cross-attention maps were recorded");
    std::vector<int64_t> heights;
    for (const auto& m : maps_) heights.push_back(m.first);
    return maps_.at(quarter_side_height(heights, lh_));
  }

 private:
  void record(const torch::Tensor& S, const torch::Tensor& T, int64_t Lq) {
    if (blend_src_.empty() && blend_tgt_.empty()) return;
    const auto [h, w] = attention_grid(Lq, lh_, lw_);
    if (h * w != Lq) return;  // not a downsampling of the latent grid
    auto ms = word_attention(S, blend_src_).view({-1, h, w}), mt = word_attention(T, blend_tgt_).view({-1, h, w});
    auto& [a, b] = maps_[h];
    a = a.defined() ? a + ms : ms;
    b = b.defined() ? b + mt : mt;
  }

  torch::Tensor cross(const std::string& site, const torch::Tensor& probs, const HookContext& ctx) {
    const PairRows r = pair_rows(ctx, true);
    if (!r.defined()) return probs;
    ++cross_calls;
    const int64_t Lq = probs.size(1), Lk = probs.size(2);
    check(Lk == map_.mapper.size(0), "p2p: cross-attention over ", Lk, " context tokens, the prompts have ",
          map_.mapper.size(0));
    auto p = probs.reshape({r.B, probs.size(0) / r.B, Lq, Lk});
    auto S = p.index_select(0, r.source).to(torch::kFloat32), T = p.index_select(0, r.target).to(torch::kFloat32);
    record(S, T, Lq);
    if (ctx.step < 0 || ctx.step >= cross_steps_) {
      if (observe_) observe_(site, ctx.step, true, S, T);
      return probs;
    }
    auto edited = torch::matmul(S, map_.mapper) * map_.alpha + T * (1 - map_.alpha);
    if (eq_.defined()) edited = edited * eq_;
    if (observe_) observe_(site, ctx.step, true, S, edited);
    auto out = p.clone();
    out.index_copy_(0, r.target, edited.to(out.scalar_type()));
    return out.view(probs.sizes());
  }

  Observer observe_;
  TokenMapping map_;
  torch::Tensor eq_;
  int cross_steps_, self_steps_;
  std::vector<int64_t> blend_src_, blend_tgt_;
  int64_t lh_, lw_;
  std::map<int64_t, std::pair<torch::Tensor, torch::Tensor>> maps_;  // by map height
  std::vector<std::unique_ptr<ScopedHook>> hooks_;
};

}  // namespace

PromptToPromptResult prompt_to_prompt(const DenoiserPtr& model, const std::vector<double>& sigmas,
                                      const torch::Tensor& x, bool from_noise, const Cond& source, const Cond& target,
                                      const std::vector<PromptWord>& source_words,
                                      const std::vector<PromptWord>& target_words, const PromptToPromptOptions& o,
                                      torch::Generator gen) {
  check(o.cross_replace >= 0 && o.cross_replace <= 1, "p2p: --cross-replace must be in [0, 1] (got ", o.cross_replace, ")");
  check(o.self_replace >= 0 && o.self_replace <= 1, "p2p: --self-replace must be in [0, 1] (got ", o.self_replace, ")");
  check(o.mode == "auto" || o.mode == "replace" || o.mode == "refine", "p2p: --p2p-mode must be auto, replace or refine (got '",
        o.mode, "')");
  check(source.context.defined() && target.context.defined(), "p2p needs a source and a target prompt");
  const int64_t L = target.context.size(1);
  const bool swap = o.mode == "replace" || (o.mode == "auto" && source_words.size() == target_words.size());
  TokenMapping map = swap ? p2p_word_swap(source_words, target_words, L) : p2p_refinement(source_words, target_words, L);
  torch::Tensor eq = o.reweight.empty() ? torch::Tensor() : p2p_reweight(target_words, o.reweight, L);
  std::vector<int64_t> blend_src, blend_tgt;
  if (!o.blend.empty()) {
    blend_src = prompt_word_tokens(source_words, o.blend), blend_tgt = prompt_word_tokens(target_words, o.blend);
    for (const std::string& w : comma_list(o.blend))
      check(!prompt_word_tokens(source_words, w).empty() || !prompt_word_tokens(target_words, w).empty(),
            "p2p: the blend word '", w, "' is in neither prompt");
  }

  PairedOptions po = o.pair;
  po.who = "p2p";
  PairedSampling pair(model, sigmas, x, from_noise, source, target, po);
  const int steps = pair.steps();
  if (steps < 1) return {pair.start(), pair.start(), {}};
  const int cross_steps = int(std::floor(o.cross_replace * steps + 1e-9));
  const int self_steps = int(std::floor(o.self_replace * steps + 1e-9));
  const int blend_after = int(std::floor(o.blend_start * steps + 1e-9));
  const int64_t N = x.size(0), h = x.size(2), w = x.size(3);
  std::vector<std::string> self_sites;  // below the latent's resolution
  if (self_steps > 0)
    for (const AttentionLayer& l : self_attention_layers(pair.network_model(), pair.start(), pair.levels().front(), source))
      if (l.tokens * 4 <= h * w) self_sites.push_back(l.site + ".probs");
  Control control(pair.network_model().network(), map, eq, cross_steps, self_steps, self_sites, blend_src, blend_tgt, h,
                  w, o.on_attention);

  torch::Tensor mask;
  std::function<torch::Tensor(int, const torch::Tensor&)> blend;
  if (!o.blend.empty())
    blend = [&](int i, const torch::Tensor& y) {
      if (i + 1 <= blend_after) return y;
      const auto [map_src, map_tgt] = control.blend_maps();
      auto one = [&](const torch::Tensor& m) {
        // Bilinear to the latent's grid, then a max-pool of (2k + 1)^2 with k = round(side / 16):
        // the paper's 3x3 on 16x16 maps for SD's 64x64 latents, at any map and latent size.
        const int64_t k = (std::max(h, w) + 8) / 16;
        auto up = torch::upsample_bilinear2d(m.unsqueeze(1), {h, w}, false);
        if (k > 0) up = torch::max_pool2d(up, {2 * k + 1, 2 * k + 1}, {1, 1}, {k, k});
        auto peak = std::get<0>(up.flatten(1).max(1)).clamp_min(1e-30).view({-1, 1, 1, 1});
        return (up / peak).gt(o.blend_threshold);
      };
      mask = torch::logical_or(one(map_src), one(map_tgt)).to(torch::kFloat64);
      torch::Tensor out = y.clone();
      auto src = out.slice(0, 0, N), tgt = out.slice(0, N, 2 * N);
      out.slice(0, N, 2 * N).copy_(src + mask * (tgt - src));
      return out;
    };
  const auto [src, tgt] = pair.run(blend, gen);
  check(control.cross_calls > 0, "p2p: the model has no cross-attention layers to control");
  return {src, tgt, mask};
}

namespace {

EditResult p2p_edit(const EditRequest& r) {
  PromptToPromptOptions o;
  o.mode = r.options.text("p2p-mode");
  o.cross_replace = r.options.number("cross-replace");
  o.self_replace = r.options.number("self-replace");
  o.reweight = r.options.text("p2p-reweight");
  o.blend = r.options.text("blend");
  o.blend_threshold = r.options.number("blend-threshold");
  o.blend_start = r.options.number("blend-start");
  o.pair = paired_options(r);
  PromptToPromptResult p = prompt_to_prompt(r.model, r.sigmas, r.x, r.from_noise, r.source, r.target, r.source_words,
                                            r.target_words, o, r.gen);
  EditResult out;
  out.edited = p.edited;
  out.source = p.source;
  out.mask = p.mask;
  return out;
}

EditMethodRegistrar reg(
    EditMethodInfo{"p2p",
                   "Prompt-to-Prompt: source and target sampled together, the target taking the source's cross- and "
                   "self-attention maps (word swap, refinement, reweighting, local blending)",
                   "Hertz et al. 2023, Prompt-to-Prompt", p2p_edit}
        .needs_source()
        .for_text_models()
        .from_seed()
        .invertible_sampler()
        .option(MethodOption::text("p2p-mode", "auto", "replace (word swap: same word count), refine (aligned words, "
                                                       "added words keep their maps) or auto (replace if the counts agree)"))
        .option(MethodOption{"cross-replace", 0.8, "share of the steps the source's cross-attention is injected"}.in(0, 1))
        .option(MethodOption{"self-replace", 0.4, "share of the steps the source's self-attention is injected (below "
                                                  "the latent resolution)"}
                    .in(0, 1))
        .option(MethodOption::text("p2p-reweight", "", "word=factor[,word=factor...]: scale the target words' "
                                                       "cross-attention"))
        .option(MethodOption::text("blend", "", "local blending: words (w1,w2) whose attention masks the edit; "
                                                "outside it the target is the source"))
        .option(MethodOption{"blend-threshold", 0.3, "local blending: mask threshold on the max-scaled maps"}.in(0, 1, true, true))
        .option(MethodOption{"blend-start", 0.2, "local blending: share of the steps before it starts"}.in(0, 1))
        .option(paired_inversion_option()));

}  // namespace

}  // namespace tweedie
