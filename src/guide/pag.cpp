// PAG, perturbed-attention guidance (Ahn et al. 2024):
//   x0 = x0(neg) + w(s) (x0(c) - x0(neg)) + s_pag (x0(c) - x0_perturbed(c)),
// the perturbed branch with identity self-attention at the chosen sites
// (pag.h). Verified in tests/test_guidance.cpp: with the identity hook the
// network no longer depends on the perturbed attention's queries and keys
// (its output is v's), the guided x0 is the affine
// combination of a separately computed perturbed branch, CFG + PAG in one
// call of 3N rows equals the formula, the other rows of the batch are left
// alone, the user's hooks survive, and an unknown site is an Error.
#include "tweedie/guide/pag.h"

#include <sstream>

#include <nlohmann/json.hpp>

#include "tweedie/core/error.h"
#include "tweedie/nn/hooks.h"
#include "tweedie/guide/cfg_rescale.h"
#include "tweedie/guide/guidance.h"

namespace tweedie {

std::string middle_attention_site(const Network& net) {
  std::string site = net.default_attention_site();
  check(!site.empty(), "no default attention site for a '", net.arch(), "' network: name one");
  return site;
}

std::vector<std::string> attention_sites(const std::string& text, const std::string& option) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string site; std::getline(ss, site, ',');) {
    check(!site.empty(), "--", option, ": empty site in '", text, "'");
    out.push_back(site);
  }
  check(!out.empty(), "--", option, ": no site in '", text, "'");
  return out;
}

torch::Tensor identity_attention_rows(const torch::Tensor& probs, int64_t batch, int64_t first) {
  check(probs.dim() == 3 && probs.size(1) == probs.size(2) && batch > 0 && probs.size(0) % batch == 0,
        "identity attention: probabilities ", probs.sizes(), " are not self-attention of a batch of ", batch);
  const int64_t heads = probs.size(0) / batch, L = probs.size(1);
  auto eye = torch::eye(L, probs.options()).expand({(batch - first) * heads, L, L});
  return torch::cat({probs.narrow(0, 0, first * heads), eye});
}

PAGDenoiser::PAGDenoiser(DenoiserPtr inner, std::shared_ptr<NetDenoiser> net, PAGOptions opt, CFGOptions cfg)
    : GuidanceRule(std::move(inner)), net_(std::move(net)), opt_(std::move(opt)), cfg_(std::move(cfg)) {
  check(inner_denoiser() != nullptr && net_ != nullptr, "PAG needs a network model (it perturbs the network's attention)");
  check(std::isfinite(opt_.scale), "PAG scale must be finite (got ", opt_.scale, ")");
  check(std::isfinite(cfg_.scale), "cfg scale must be finite");
  if (opt_.sites.empty()) opt_.sites = {middle_attention_site(net_->network())};
}

Prediction PAGDenoiser::guide(const torch::Tensor& x, double s, const Cond& c) {
  const double w = cfg_.scale_at ? cfg_.scale_at(s) : cfg_.scale;
  check(std::isfinite(w), "cfg scale at sigma ", s, " is not finite");
  const int64_t n = x.size(0);
  const bool with_cfg = w != 1.0, with_pag = opt_.scale != 0 && (!opt_.when || opt_.when(current_hook_context(s, 0)));
  if (!with_cfg && !with_pag) return inner(x, s, c);
  // Batch [c; neg; c], [c; c] or [c; neg]; with PAG the last n rows are perturbed.
  Cond all = c;
  if (with_cfg) all = all.concat(cfg_.negative ? cfg_.negative(c) : c.null_like());
  if (with_pag) all = all.concat(c);
  const int64_t rows = (1 + int(with_cfg) + int(with_pag)) * n;

  std::vector<int> fired(opt_.sites.size(), 0);
  std::vector<std::unique_ptr<ScopedHook>> hooks;
  const AttentionPerturbation& pert = opt_.perturbation;
  const std::string& suffix = pert.suffix;
  for (size_t i = 0; i < opt_.sites.size() && with_pag; ++i) {
    const std::string& site = opt_.sites[i];
    const bool prefix = !site.empty() && site.back() == '*';
    hooks.push_back(std::make_unique<ScopedHook>(
        net_->network().hooks(), prefix ? site : site + suffix,
        [&, i](const std::string& at, const torch::Tensor& v, const HookContext&) {
          const bool acts = pert.acts_on ? pert.acts_on(at)
                                         : at.size() >= suffix.size() &&
                                               at.compare(at.size() - suffix.size(), suffix.size(), suffix) == 0;
          if (!acts) return v;
          ++fired[i];
          return pert.apply ? pert.apply(v, rows, rows - n, x) : identity_attention_rows(v, rows, rows - n);
        }));
  }
  std::vector<std::string> names{"cond"};
  if (with_cfg) names.push_back("uncond");
  if (with_pag) names.push_back("perturbed");
  Prediction both = [&] {
    BranchScope branches(names);
    return inner(torch::cat(std::vector<torch::Tensor>(rows / n, x)), s, all);
  }();
  for (size_t i = 0; i < hooks.size(); ++i)
    check(fired[i] > 0, pert.name, ": the ", net_->network().arch(), " network has no ", pert.what, " at '",
          opt_.sites[i], "' (sites are ", pert.sites_are, ")");
  auto x0 = both.x0().split(n), eps = both.eps().split(n);
  const auto& cond = x0[0];
  torch::Tensor guided = with_pag ? cond + (cond - x0.back()) * opt_.scale : cond;
  if (with_cfg) {
    guided = guided + (cond - x0[1]) * (w - 1.0);  // = neg + w (cond - neg) + s_pag (cond - perturbed)
    if (cfg_.rescale > 0) guided = cfg_rescale(guided, cond, cfg_.rescale);
  }
  Prediction out = Prediction::from_x0(guided, x, s, process());
  if (with_cfg) out.set_renoise_eps(eps[1]);
  return out;
}

}  // namespace tweedie

namespace tweedie {
namespace {

DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions& g, const std::shared_ptr<NetDenoiser>& net) {
  CFGOptions cfg = cfg_options(g, inner->process());
  const auto sites = g.has("pag-sites") ? attention_sites(g.text("pag-sites"), "pag-sites") : std::vector<std::string>{};
  return std::make_shared<PAGDenoiser>(std::move(inner), net, PAGOptions{g.number("pag"), sites}, std::move(cfg));
}

std::string describe(const GuidanceOptions& g) {
  std::ostringstream o;
  o << ", PAG " << g.number("pag");
  return o.str();
}

// Same place as CFG: with PAG on, its one call does CFG's part too.
GuidanceRuleRegistrar reg(GuidanceRuleInfo{"pag", "perturbed-attention guidance: away from identity self-attention",
                                           "Ahn et al. 2024", 40, build, describe}
                              .option(MethodOption{"pag", 0, "perturbed-attention guidance scale, e.g. 3 (network models)"})
                              .option(MethodOption::text("pag-sites", "middle block",
                                                         "attention paths PAG perturbs, comma-separated (e.g. "
                                                         "mid.attn.0,up.2.attn.*)"))
                              .needs_network("it works on the network's attention")
                              .for_text_models()
                              .does_the_work_of("cfg"));

}  // namespace
}  // namespace tweedie
