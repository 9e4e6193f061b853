// MasaCtrl (Cao et al. 2023): mutual self-attention, the target's queries on
// the source's keys and values, optionally split by foreground masks from
// cross-attention (edit/masactrl.h has the method). Verified in
// tests/test_attention_edits.cpp: before the start step the rows are the two
// prompts' own samples; at controlled layers and steps the target uses the
// source's keys, elsewhere its own; a hand-set cross-attention map gives the
// closed-form foreground/background split of the target's attention.
#include "tweedie/edit/masactrl.h"

#include <cmath>
#include <map>
#include <memory>

#include "tweedie/core/error.h"
#include "tweedie/edit/edit_method.h"

namespace tweedie {

namespace {

class MutualControl {
 public:
  using Observer = decltype(MasaCtrlOptions::on_attention);
  MutualControl(Network& net, const std::vector<std::string>& layers, int start_step, std::vector<int64_t> src_tokens,
                std::vector<int64_t> tgt_tokens, int64_t map_tokens, int64_t lh, int64_t lw, double threshold,
                Observer observe)
      : start_(start_step), src_tokens_(std::move(src_tokens)), tgt_tokens_(std::move(tgt_tokens)),
        map_tokens_(map_tokens), lh_(lh), lw_(lw), threshold_(threshold), observe_(std::move(observe)) {
    const bool masks = !src_tokens_.empty() || !tgt_tokens_.empty();
    auto active = [this](int step) { return step >= start_; };
    for (const std::string& l : layers) {
      hooks_.push_back(share_source_rows(net.hooks(), l + ".k", active, false, observe_));
      hooks_.push_back(share_source_rows(net.hooks(), l + ".v", active, false));
      if (masks)
        add(net, l + ".probs", [this](const std::string& site, const torch::Tensor& p, const HookContext& ctx) {
          return split(site, p, ctx);
        });
    }
    if (masks)
      add(net, "*attn2.probs", [this](const std::string&, const torch::Tensor& p, const HookContext& ctx) {
        record(p, ctx);
        return p;
      });
  }
  MutualControl(const MutualControl&) = delete;
  MutualControl& operator=(const MutualControl&) = delete;

 private:
  void add(Network& net, const std::string& pattern, HookFn fn) {
    hooks_.push_back(std::make_unique<ScopedHook>(net.hooks(), pattern, std::move(fn)));
  }

  // The mask words' cross-attention of the conditional rows, averaged over the layers this call has run.
  void record(const torch::Tensor& probs, const HookContext& ctx) {
    if (ctx.s != call_s_ || ctx.step != call_step_) {  // a new network call
      call_s_ = ctx.s, call_step_ = ctx.step;
      sum_src_ = sum_tgt_ = torch::Tensor();
      layers_ = 0;
    }
    if (probs.size(1) != map_tokens_) return;
    const PairRows r = pair_rows(ctx, true);
    if (!r.defined()) return;
    auto p = probs.reshape({r.B, probs.size(0) / r.B, probs.size(1), probs.size(2)}).to(torch::kFloat32);
    auto ms = word_attention(p.index_select(0, r.source), src_tokens_);
    auto mt = word_attention(p.index_select(0, r.target), tgt_tokens_);
    sum_src_ = sum_src_.defined() ? sum_src_ + ms : ms;
    sum_tgt_ = sum_tgt_.defined() ? sum_tgt_ + mt : mt;
    ++layers_;
  }

  // A binary mask [N, tokens] at a layer's grid from a recorded map sum [N, map_tokens].
  torch::Tensor mask_at(const torch::Tensor& sum, int64_t tokens) const {
    const auto [mh, mw] = attention_grid(map_tokens_, lh_, lw_);
    const auto [h, w] = attention_grid(tokens, lh_, lw_);
    auto m = (sum / double(layers_)).view({-1, 1, mh, mw});
    auto lo = std::get<0>(m.flatten(1).min(1)).view({-1, 1, 1, 1}), hi = std::get<0>(m.flatten(1).max(1)).view({-1, 1, 1, 1});
    auto scaled = (m - lo) / (hi - lo).clamp_min(1e-30);
    return torch::upsample_nearest2d(scaled, {h, w}).flatten(1).ge(threshold_).to(torch::kFloat32);
  }

  // The target rows' self-attention split: foreground queries on the source's foreground keys, background on background.
  torch::Tensor split(const std::string& site, const torch::Tensor& probs, const HookContext& ctx) {
    if (ctx.step < start_ || layers_ == 0 || ctx.s != call_s_) return probs;
    const PairRows r = pair_rows(ctx, false);
    if (!r.defined()) return probs;
    const int64_t Lq = probs.size(1), Lk = probs.size(2);
    if (Lq != Lk) return probs;
    const int64_t N = sum_src_.size(0);
    auto p = probs.reshape({r.B, probs.size(0) / r.B, Lq, Lk});
    auto T = p.index_select(0, r.target).to(torch::kFloat32);  // [R, H, Lq, Lk], R = rows of the target branch
    const auto sample = torch::arange(T.size(0), torch::kInt64).remainder(N);
    auto keys_fg = mask_at(sum_src_, Lk).index_select(0, sample).view({-1, 1, 1, Lk});
    auto query_fg = mask_at(sum_tgt_, Lq).index_select(0, sample).view({-1, 1, Lq, 1});
    auto restrict = [&](const torch::Tensor& keep) {
      auto kept = T * keep;
      auto total = kept.sum(3, true);
      return torch::where(total > 0, kept / total.clamp_min(1e-30), T);
    };
    auto used = torch::where(query_fg > 0.5, restrict(keys_fg), restrict(1 - keys_fg));
    if (observe_) observe_(site, ctx.step, p.index_select(0, r.source), used);
    auto out = p.clone();
    out.index_copy_(0, r.target, used.to(out.scalar_type()));
    return out.view(probs.sizes());
  }

  int start_;
  std::vector<int64_t> src_tokens_, tgt_tokens_;
  int64_t map_tokens_, lh_, lw_;
  double threshold_;
  Observer observe_;
  double call_s_ = -1;
  int call_step_ = -2;
  torch::Tensor sum_src_, sum_tgt_;
  int layers_ = 0;
  std::vector<std::unique_ptr<ScopedHook>> hooks_;
};

}  // namespace

MasaCtrlResult masactrl(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x,
                        bool from_noise, const Cond& source, const Cond& target,
                        const std::vector<PromptWord>& source_words, const std::vector<PromptWord>& target_words,
                        const MasaCtrlOptions& o, torch::Generator gen) {
  check(o.start_step >= 0 && o.start_step <= 1, "masactrl: --masa-step must be in [0, 1] (got ", o.start_step, ")");
  check(o.mask_threshold >= 0 && o.mask_threshold <= 1, "masactrl: --masa-threshold must be in [0, 1] (got ",
        o.mask_threshold, ")");
  std::vector<int64_t> src_tokens, tgt_tokens;
  if (!o.mask.empty()) {
    src_tokens = prompt_word_tokens(source_words, o.mask), tgt_tokens = prompt_word_tokens(target_words, o.mask);
    for (const std::string& w : comma_list(o.mask))
      check(!prompt_word_tokens(source_words, w).empty() || !prompt_word_tokens(target_words, w).empty(),
            "masactrl: the mask word '", w, "' is in neither prompt");
  }
  PairedOptions po = o.pair;
  po.who = "masactrl";
  PairedSampling pair(model, sigmas, x, from_noise, source, target, po);
  MasaCtrlResult out;
  if (pair.steps() < 1) {
    out.source = out.edited = pair.start();
    return out;
  }
  const auto layers = self_attention_layers(pair.network_model(), pair.start(), pair.levels().front(), source);
  const int64_t n = int64_t(layers.size());
  check(n > 0, "masactrl: the model has no self-attention layers");
  int64_t first = n * 10 / 16;
  if (o.start_layer != "auto") {
    try {
      size_t used = 0;
      first = std::stoll(o.start_layer, &used);
      check(used == o.start_layer.size(), "");
    } catch (...) {
      first = -1;
    }
    check(first >= 0 && first < n, "masactrl: --masa-layer must be auto or a layer index in [0, ", n, ") (got '",
          o.start_layer, "')");
  }
  for (int64_t i = first; i < n; ++i) out.layers.push_back(layers[size_t(i)].site);
  // The cross-attention grid nearest a quarter of the latent's side (ties: the finer).
  const int64_t lh = x.size(2), lw = x.size(3);
  std::vector<int64_t> heights;
  for (const AttentionLayer& l : layers) heights.push_back(attention_grid(l.tokens, lh, lw).first);
  const int64_t map_h = quarter_side_height(heights, lh);
  int64_t map_tokens = 0;
  for (const AttentionLayer& l : layers)
    if (attention_grid(l.tokens, lh, lw).first == map_h) map_tokens = l.tokens;
  const int start = int(std::floor(o.start_step * pair.steps() + 1e-9));
  MutualControl control(pair.network_model().network(), out.layers, start, src_tokens, tgt_tokens, map_tokens, lh, lw,
                        o.mask_threshold, o.on_attention);
  std::tie(out.source, out.edited) = pair.run({}, gen);
  return out;
}

namespace {

EditResult masactrl_edit(const EditRequest& r) {
  MasaCtrlOptions o;
  o.start_step = r.options.number("masa-step");
  o.start_layer = r.options.text("masa-layer");
  o.mask = r.options.text("masa-mask");
  o.mask_threshold = r.options.number("masa-threshold");
  o.pair = paired_options(r);
  MasaCtrlResult m = masactrl(r.model, r.sigmas, r.x, r.from_noise, r.source, r.target, r.source_words,
                              r.target_words, o, r.gen);
  EditResult out;
  out.edited = m.edited;
  out.source = m.source;
  return out;
}

EditMethodRegistrar reg(
    EditMethodInfo{"masactrl",
                   "MasaCtrl: source and target sampled together, the target's self-attention querying the source's "
                   "keys and values from a step and layer on (optionally split by foreground masks)",
                   "Cao et al. 2023, MasaCtrl", masactrl_edit}
        .needs_source()
        .for_text_models()
        .from_seed()
        .invertible_sampler()
        .option(MethodOption{"masa-step", 0.08, "share of the steps before mutual self-attention starts"}.in(0, 1))
        .option(MethodOption::text("masa-layer", "auto", "first controlled self-attention layer in call order (auto: "
                                                         "10/16 of them, the paper's 10 on SD 1.x)"))
        .option(MethodOption::text("masa-mask", "", "words (w1,w2) whose cross-attention masks the object: "
                                                    "foreground attends to foreground, background to background"))
        .option(MethodOption{"masa-threshold", 0.1, "mask threshold on the min-max scaled maps"}.in(0, 1))
        .option(paired_inversion_option()));

}  // namespace

}  // namespace tweedie
