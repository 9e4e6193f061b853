// SEGA, semantic guidance (sega.h). Verified in tests/test_sega.cpp: the
// guided eps against the formula computed by hand over three steps (mask,
// momentum, warm-up, cool-down), CFG exactly when every concept has cooled
// down and the momentum is off, the sign of "-" concepts, one batched call,
// and bad input.
#include "tweedie/guide/sega.h"

#include <cmath>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/edit/paired_sampling.h"
#include "tweedie/guide/attention_loss.h"
#include "tweedie/guide/cfg_rescale.h"
#include "tweedie/guide/guidance.h"
#include "tweedie/nn/hooks.h"

namespace tweedie {

std::vector<SegaConcept> parse_sega_concepts(const std::string& text) {
  std::vector<SegaConcept> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, '|');) {
    const size_t a = item.find_first_not_of(' '), b = item.find_last_not_of(' ');
    item = a == std::string::npos ? "" : item.substr(a, b - a + 1);
    SegaConcept c;
    if (!item.empty() && (item[0] == '-' || item[0] == '+')) {
      c.away = item[0] == '-';
      item = item.substr(1);
    }
    check(!item.empty(), "--sega: empty concept in '", text, "' (concepts are prompts separated by |, '-' to steer away)");
    c.prompt = item;
    out.push_back(c);
  }
  check(!text.empty() && text.back() != '|', "--sega: empty concept in '", text,
        "' (concepts are prompts separated by |, '-' to steer away)");
  return out;
}

SegaMask parse_sega_mask(const std::string& text, const std::string& option) {
  if (text == "channel") return SegaMask::Channel;
  if (text == "attention") return SegaMask::Attention;
  if (text == "intersect") return SegaMask::Intersect;
  fail("--", option, ": unknown mask '", text, "' (channel, attention, intersect)");
}

SegaDenoiser::SegaDenoiser(DenoiserPtr inner, CFGOptions cfg, SegaOptions sega, std::vector<Cond> concepts,
                           std::shared_ptr<NetDenoiser> net)
    : GuidanceRule(std::move(inner)), cfg_(std::move(cfg)), o_(std::move(sega)), concepts_(std::move(concepts)),
      net_(std::move(net)) {
  if (o_.mask != SegaMask::Channel) {
    check(net_ != nullptr, "SEGA's attention masks need a network model (they read its cross-attention)");
    check(o_.tokens.size() == concepts_.size(), "SEGA's attention masks need each concept's tokens (", o_.tokens.size(),
          " for ", concepts_.size(), " concepts)");
    for (const auto& t : o_.tokens) check(!t.empty(), "SEGA's attention masks: a concept without tokens");
  }
  check(!concepts_.empty(), "SEGA needs at least one concept");
  check(o_.away.size() == concepts_.size() && o_.scales.size() == concepts_.size(), "SEGA: ", concepts_.size(),
        " concepts, ", o_.scales.size(), " scales and ", o_.away.size(), " directions");
  for (double v : o_.scales) check(std::isfinite(v), "SEGA scales must be finite (got ", v, ")");
  check(o_.threshold >= 0 && o_.threshold < 1, "SEGA threshold must be in [0, 1) (got ", o_.threshold, ")");
  check(o_.warmup >= 0 && o_.cooldown >= 0, "SEGA warm-up and cool-down must be >= 0");
  check(o_.momentum >= 0 && std::isfinite(o_.momentum), "SEGA momentum scale must be >= 0 (got ", o_.momentum, ")");
  check(o_.beta >= 0 && o_.beta < 1, "SEGA momentum beta must be in [0, 1) (got ", o_.beta, ")");
  check(std::isfinite(cfg_.scale), "cfg scale must be finite");
}

Prediction SegaDenoiser::guide(const torch::Tensor& x, double s, const Cond& c) {
  const double w = cfg_.scale_at ? cfg_.scale_at(s) : cfg_.scale;
  check(std::isfinite(w), "cfg scale at sigma ", s, " is not finite");
  const int64_t n = x.size(0), k = int64_t(concepts_.size());
  Cond all = c.concat(cfg_.negative ? cfg_.negative(c) : c.null_like());
  std::vector<std::string> names{"cond", "uncond"};
  for (int64_t j = 0; j < k; ++j) {
    const Cond& e = concepts_[size_t(j)];
    const int64_t rows = e.context.defined() ? e.context.size(0) : e.labels.defined() ? e.labels.size(0) : n;
    check(rows == n, "SEGA: concept ", j, " has ", rows, " rows for a batch of ", n);
    all = all.concat(e);
    names.push_back("concept");
  }
  // The concept rows' cross-attention, for the attention masks.
  std::vector<CrossAttentionLayer> maps;
  std::unique_ptr<ScopedHook> keep;
  const bool attention = o_.mask != SegaMask::Channel;
  if (attention) {
    check(x.dim() == 4, "SEGA's attention masks need image-shaped latents [N, C, H, W], got ", x.sizes());
    keep = std::make_unique<ScopedHook>(
        net_->network().hooks(), "*attn2.probs", [&](const std::string& site, const torch::Tensor& pr, const HookContext&) {
          const int64_t B = (k + 2) * n, heads = pr.size(0) / B, L = pr.size(1);
          const auto [h, w] = attention_grid(L, x.size(2), x.size(3));
          maps.push_back({site, h, w,
                          pr.view({B, heads, L, pr.size(2)}).narrow(0, 2 * n, k * n).mean(1).to(torch::kFloat64)});
          return pr;
        });
  }
  Prediction p = [&] {
    BranchScope branches(names);
    return inner(torch::cat(std::vector<torch::Tensor>(size_t(k + 2), x)), s, all);
  }();
  keep.reset();
  check(!attention || !maps.empty(), "SEGA's attention masks: the network has no cross-attention");
  int64_t mh = 0, mw = 0;
  const torch::Tensor A = attention ? quarter_side_maps(maps, x.size(2), mh, mw) : torch::Tensor();
  const auto eps = p.eps().to(torch::kFloat64).split(n);
  const torch::Tensor& ec = eps[0];
  const torch::Tensor& eu = eps[1];
  torch::Tensor guidance = (ec - eu) * w;

  const int step = current_hook_context(s, 0).step;
  auto per_channel = [&](const torch::Tensor& t) { return t.reshape({n, t.dim() > 2 ? t.size(1) : 1, -1}); };
  torch::Tensor edit = torch::zeros_like(ec);
  for (int64_t j = 0; j < k; ++j) {
    if (step >= 0 && double(step) >= o_.cooldown) continue;
    torch::Tensor psi = (eps[size_t(j + 2)] - eu) * (o_.away[size_t(j)] ? -o_.scales[size_t(j)] : o_.scales[size_t(j)]);
    if (!attention) {
      auto mag = per_channel(psi.abs());
      auto q = at::quantile(mag, o_.threshold, 2, true);
      psi = per_channel(psi).where(mag >= q, torch::zeros_like(mag)).reshape(psi.sizes());
    } else {
      // Where the concept's tokens attend most (LEDITS++'s M1) ...
      const auto idx = torch::tensor(o_.tokens[size_t(j)], torch::kInt64);
      auto m = smooth_attention(A.narrow(0, j * n, n).index_select(2, idx).sum(2).view({n, 1, mh, mw}));
      auto qm = at::quantile(m.flatten(1), o_.threshold, 1, true).view({n, 1, 1, 1});
      auto keep_mask = torch::upsample_nearest2d((m >= qm).to(psi.dtype()), {x.size(2), x.size(3)});
      if (o_.mask == SegaMask::Intersect) {  // ... and where the direction is large over the channels (M2)
        auto size = psi.abs().sum(1, true);
        auto qs = at::quantile(size.flatten(1), o_.threshold, 1, true).view({n, 1, 1, 1});
        keep_mask = keep_mask * (size >= qs).to(psi.dtype());
      }
      psi = psi * keep_mask;
    }
    edit = edit + psi;
  }
  if (o_.momentum > 0) {
    const bool restart = !momentum_.defined() || !momentum_.sizes().equals(edit.sizes()) ||
                         (step >= 0 ? step < last_step_ : s > last_s_);
    if (restart) momentum_ = torch::zeros_like(edit);
    edit = edit + momentum_ * o_.momentum;
    momentum_ = momentum_ * o_.beta + edit * (1 - o_.beta);
    last_step_ = step, last_s_ = s;
  }
  if (step < 0 || step >= o_.warmup) guidance = guidance + edit;
  const Process& proc = process();
  torch::Tensor x0 = Prediction({PredKind::Eps}, (eu + guidance).to(x.scalar_type()), x, s, proc).x0();
  if (cfg_.rescale > 0) x0 = cfg_rescale(x0, p.x0().split(n)[0], cfg_.rescale);
  Prediction out = Prediction::from_x0(x0, x, s, proc);
  out.set_renoise_eps(eps[1].to(x.scalar_type()));
  return out;
}

namespace {

std::vector<double> concept_scales(const std::string& text, size_t k) {
  std::vector<double> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    check(!item.empty() && end && *end == '\0' && std::isfinite(v), "--sega-scale: '", item, "' is not a number");
    out.push_back(v);
  }
  check(out.size() == 1 || out.size() == k, "--sega-scale: give one scale or one per concept (", k, "), got ",
        out.size());
  if (out.size() == 1) out.assign(k, out[0]);
  return out;
}

DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions& g, const std::shared_ptr<NetDenoiser>& net) {
  const auto concepts = parse_sega_concepts(g.text("sega"));
  check(g.has("sega-concepts"), "--sega needs a text model: its concepts are prompts");
  auto conds = g.object<std::vector<Cond>>("sega-concepts");
  check(conds.size() == concepts.size(), "--sega: ", concepts.size(), " concepts but ", conds.size(),
        " encoded conditions");
  SegaOptions o;
  for (const auto& c : concepts) o.away.push_back(c.away);
  o.scales = concept_scales(g.text("sega-scale"), concepts.size());
  o.threshold = g.number("sega-threshold");
  o.warmup = int(g.number("sega-warmup"));
  o.cooldown = g.number("sega-cooldown");
  o.momentum = g.number("sega-momentum");
  o.beta = g.number("sega-beta");
  o.mask = parse_sega_mask(g.text("sega-mask"), "sega-mask");
  if (o.mask != SegaMask::Channel) {
    check(g.has("sega-tokens"), "--sega-mask ", g.text("sega-mask"), " needs the concepts' tokens (a text model)");
    o.tokens = g.object<std::vector<std::vector<int64_t>>>("sega-tokens");
  }
  return std::make_shared<SegaDenoiser>(std::move(inner), cfg_options(g, inner->process()), std::move(o),
                                        std::move(conds), net);
}

std::string describe(const GuidanceOptions& g) {
  std::ostringstream o;
  o << ", SEGA '" << g.text("sega") << "' scale " << g.text("sega-scale");
  return o.str();
}

// CFG's place: its one call holds CFG's branches and the concepts'.
GuidanceRuleRegistrar reg(
    GuidanceRuleInfo{"sega", "semantic guidance: toward or away from concept prompts, where they act strongly",
                     "Brack et al. 2023", 40, build, describe}
        .option(MethodOption::text("sega", "",
                                   "SEGA edit concepts: prompts separated by |, '-' in front to steer away (e.g. "
                                   "\"a hat|-glasses\")"))
        .option(MethodOption::text("sega-scale", "5", "SEGA guidance scale s_j: one, or one per concept (comma-separated)"))
        .option(MethodOption{"sega-threshold", 0.9,
                             "SEGA: keep each concept's direction where its size reaches this quantile per channel"}
                    .in(0, 1, false, true))
        .option(MethodOption{"sega-warmup", 10, "SEGA: steps before the concepts' directions are applied"}
                    .at_least(0)
                    .whole())
        .option(MethodOption{"sega-cooldown", INFINITY, "SEGA: the step from which the concepts stop (inf: never)"}
                    .at_least(0)
                    .or_infinite())
        .option(MethodOption{"sega-momentum", 0.1, "SEGA momentum scale s_m"}.at_least(0))
        .option(MethodOption{"sega-beta", 0.4, "SEGA momentum decay beta"}.in(0, 1, false, true))
        .option(MethodOption::text("sega-mask", "channel",
                                   "where each concept acts: channel (SEGA: its direction's per-channel quantile), "
                                   "attention (its cross-attention's quantile) or intersect (both, summed over "
                                   "channels: LEDITS++)"))
        .attachment("sega-concepts")
        .attachment("sega-tokens")
        .on_when_given()
        .for_text_models()
        .on_prompts()
        .does_the_work_of("cfg"));

}  // namespace
}  // namespace tweedie
