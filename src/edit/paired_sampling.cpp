// A source and a target sampled together (edit/paired_sampling.h).
#include "tweedie/edit/paired_sampling.h"

#include <algorithm>
#include <cmath>
#include <cctype>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/edit/edit_method.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/sample/sampler.h"

namespace tweedie {

namespace {

// Evaluates [source rows; target rows] in one call of the inner model, named as branches.
class PairDenoiser : public Denoiser {
 public:
  explicit PairDenoiser(DenoiserPtr inner) : inner_(std::move(inner)) {}
  const Process& process() const override { return inner_->process(); }
  Prediction predict(const torch::Tensor& x, double s, const Cond& c) override {
    BranchScope branches({"source", "target"});
    return inner_->predict(x, s, c);
  }

 private:
  DenoiserPtr inner_;
};

}  // namespace

MethodOption paired_inversion_option() {
  return MethodOption::text("inversion", "direct",
                            "input images: direct (the source kept on the DDIM inversion path, exact), ddim, null-text "
                            "or negative-prompt");
}

PairedOptions paired_options(const EditRequest& r) {
  PairedOptions o;
  o.cfg = r.cfg, o.sampler = r.sampler, o.strength = r.strength, o.inversion = r.options.text("inversion");
  return o;
}

PairedSampling::PairedSampling(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x,
                               bool from_noise, const Cond& source, const Cond& target, const PairedOptions& o)
    : net_(std::dynamic_pointer_cast<NetDenoiser>(model)), model_(model), source_(source), target_(target), o_(o),
      from_noise_(from_noise) {
  const std::string& who = o.who;
  check(net_ != nullptr, who, " needs a network model with attention (a Stable Diffusion UNet)");
  check(x.dim() == 4, who, ": the latents must be [N, C, h, w], got ", x.sizes());
  check(source.context.defined() && target.context.defined(), who, " needs a source and a target prompt");
  const int64_t N = x.size(0);
  check(source.context.size(0) == N && target.context.size(0) == N &&
            source.context.size(1) == target.context.size(1),
        who, ": the prompts' contexts must be [N, L, D] for the ", N, " latents, with one L");
  check(o.inversion == "direct" || o.inversion == "ddim" || o.inversion == "null-text" || o.inversion == "negative-prompt",
        who, ": --inversion must be direct, ddim, null-text or negative-prompt (got '", o.inversion, "')");
  check(sigmas.size() >= 2 && sigmas.back() == 0, who, ": the schedule must end at 0");
  if (from_noise) {
    levels_ = sigmas;
    start_ = x.to(torch::kFloat64) * sigmas.front();
    return;
  }
  levels_ = schedule_tail(sigmas, o.strength);
  start_ = x.to(torch::kFloat64);
  if (levels_.size() < 2) {
    levels_.resize(1);
    return;
  }
  require_invertible(find_sampler(o.sampler));
  InversionOptions io;
  io.sampler = o.sampler;
  io.cfg = o.inversion == "null-text" ? o.cfg : 1.0;
  io.lr = 0.01;  // the paper's rate for CLIP text embeddings
  inv_ = invert(o.inversion == "null-text" ? "null-text" : "ddim", model, levels_, x, source, io);
  levels_ = inv_.sigmas;
  start_ = inv_.latent;
}

std::pair<torch::Tensor, torch::Tensor> PairedSampling::run(
    const std::function<torch::Tensor(int, const torch::Tensor&)>& step_edit, torch::Generator gen) {
  const int64_t N = start_.size(0);
  if (steps() < 1) return {start_, start_};
  const bool real = !from_noise_;
  CFGOptions g;
  g.scale = o_.cfg;
  if (real && o_.inversion == "negative-prompt") {
    const Cond src2 = source_.concat(source_);
    g.negative = [src2](const Cond&) { return src2; };
  } else if (real && o_.inversion == "null-text") {
    const std::string who = o_.who;
    g.negative = [this, who](const Cond& pos) {
      const int k = current_hook_context(0, 0).step;
      check(k >= 0 && k < int(inv_.null_embeddings.size()), who, ": no null-text embedding for step ", k);
      Cond n = pos.null_like();
      const auto& e = inv_.null_embeddings[size_t(k)];
      n.context = torch::cat({e, e}).to(pos.context.scalar_type());
      return n;
    };
  }
  DenoiserPtr guided = o_.cfg == 1.0 && !g.negative ? model_ : std::make_shared<CFGDenoiser>(model_, g);
  PairDenoiser pair(guided);
  const bool direct = real && o_.inversion == "direct";
  auto edit = [&](int i, const torch::Tensor& y) {
    torch::Tensor out = y;
    if (direct) {
      out = y.clone();
      out.slice(0, 0, N).copy_(inv_.trajectory[size_t(i + 1)]);
    }
    return step_edit ? step_edit(i, out) : out;
  };
  torch::NoGradGuard ng;
  SamplerRun run(pair, levels_, source_.concat(target_), {}, gen);
  const torch::Tensor X = torch::cat({start_, start_});
  const SamplerInfo& sampler = find_sampler(o_.sampler);
  const torch::Tensor out = direct || step_edit ? edit_detail::run_with_step_edit(sampler, run, X, edit)
                                                : run_sampler(sampler, run, X);
  return {out.slice(0, 0, N).to(torch::kFloat64), out.slice(0, N, 2 * N).to(torch::kFloat64)};
}

PairRows pair_rows(const HookContext& ctx, bool cond_only) {
  PairRows r;
  if (ctx.branches.empty()) return r;
  auto rows = [&](const std::string& branch) {
    std::vector<int64_t> all = ctx.rows(branch);
    if (!cond_only) return all;
    const std::vector<int64_t> cond = ctx.rows("cond");
    if (cond.empty() && ctx.rows("uncond").empty()) return all;  // no CFG split: every row is conditional
    std::vector<int64_t> out;
    for (int64_t x : all)
      if (std::find(cond.begin(), cond.end(), x) != cond.end()) out.push_back(x);
    return out;
  };
  const auto s = rows("source"), t = rows("target");
  if (s.empty() || s.size() != t.size()) return r;
  r.source = torch::tensor(s, torch::kInt64), r.target = torch::tensor(t, torch::kInt64);
  r.B = ctx.branches.back().end;
  return r;
}

std::unique_ptr<ScopedHook> share_source_rows(Hooks& hooks, const std::string& pattern, std::function<bool(int)> when,
                                              bool cond_only, PairObserver observe) {
  return std::make_unique<ScopedHook>(
      hooks, pattern,
      [when = std::move(when), cond_only, observe = std::move(observe)](const std::string& site, const torch::Tensor& t,
                                                                         const HookContext& ctx) {
        const bool on = when(ctx.step);
        if (!on && !observe) return t;
        const PairRows r = pair_rows(ctx, cond_only);
        if (!r.defined() || t.size(0) % r.B != 0) return t;
        // Batch-first values of B rows, or attention probabilities [B * heads, ...].
        const int64_t per = t.size(0) / r.B;
        auto v = t.reshape({r.B, per, -1});
        auto src = v.index_select(0, r.source);
        auto out = on ? v.clone() : v;
        if (on) out.index_copy_(0, r.target, src);
        if (observe) {  // rows first: [R, heads, ...] for probabilities, [R, ...] otherwise
          std::vector<int64_t> shape = {r.source.size(0)};
          if (per > 1) shape.push_back(per);
          for (int64_t d = 1; d < t.dim(); ++d) shape.push_back(t.size(d));
          observe(site, ctx.step, src.reshape(shape), out.index_select(0, r.target).reshape(shape));
        }
        return on ? out.view(t.sizes()) : t;
      });
}

std::vector<SiteShape> visited_sites(NetDenoiser& net, const std::string& pattern, const torch::Tensor& x, double s,
                                     const Cond& c) {
  std::vector<SiteShape> sites;
  {
    ScopedHook seen(net.network().hooks(), pattern,
                    [&](const std::string& site, const torch::Tensor& v, const HookContext&) {
                      if (std::none_of(sites.begin(), sites.end(), [&](const SiteShape& x) { return x.site == site; }))
                        sites.push_back({site, v.sizes().vec()});
                      return v;
                    });
    torch::NoGradGuard ng;
    Cond one = c;
    const int64_t n = x.size(0);
    if (one.context.defined()) one.context = one.context.slice(0, 0, 1);
    for (auto& [k, v] : one.extra)
      if (v.dim() > 0 && v.size(0) == n && n > 1) v = v.slice(0, 0, 1);
    net.predict(x.slice(0, 0, 1).to(torch::kFloat32), s, one);
  }
  return sites;
}

std::vector<AttentionLayer> self_attention_layers(NetDenoiser& net, const torch::Tensor& x, double s, const Cond& c) {
  std::vector<AttentionLayer> layers;
  for (const SiteShape& q : visited_sites(net, "*attn1.q", x, s, c))
    if (q.shape.size() == 4) layers.push_back({q.site.substr(0, q.site.size() - 2), q.shape[2]});
  return layers;
}

std::pair<int64_t, int64_t> attention_grid(int64_t tokens, int64_t lh, int64_t lw) {
  int64_t h = lh, w = lw;
  while (h * w > tokens && h % 2 == 0 && w % 2 == 0) h /= 2, w /= 2;
  return {h, w};
}

int64_t quarter_side_height(const std::vector<int64_t>& heights, int64_t lh) {
  check(!heights.empty(), "no attention maps to choose from");
  const double want = std::log2(std::max(1.0, double(lh) / 4));
  int64_t best = heights.front();
  for (int64_t h : heights) {
    const double d = std::abs(std::log2(double(h)) - want), b = std::abs(std::log2(double(best)) - want);
    if (d < b || (d == b && h > best)) best = h;
  }
  return best;
}

torch::Tensor word_attention(const torch::Tensor& P, const std::vector<int64_t>& tokens) {
  if (tokens.empty()) return torch::zeros({P.size(0), P.size(2)});
  return P.index_select(3, torch::tensor(tokens, torch::kInt64)).sum(3).mean(1);
}

std::vector<std::string> comma_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const size_t a = item.find_first_not_of(" \t"), b = item.find_last_not_of(" \t");
    out.push_back(a == std::string::npos ? "" : item.substr(a, b - a + 1));
  }
  return out;
}

std::vector<int64_t> prompt_word_tokens(const std::vector<PromptWord>& words, const std::string& names) {
  auto lower = [](std::string t) {
    for (char& c : t) c = char(std::tolower(static_cast<unsigned char>(c)));
    return t;
  };
  std::vector<int64_t> out;
  for (const std::string& name : comma_list(names))
    for (const PromptWord& w : words)
      if (!name.empty() && lower(w.text) == lower(name)) out.insert(out.end(), w.positions.begin(), w.positions.end());
  return out;
}

}  // namespace tweedie
