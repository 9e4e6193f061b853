// PAG, perturbed-attention guidance (Ahn et al. 2024, "Self-Rectifying
// Diffusion Sampling with Perturbed-Attention Guidance"): the weak branch is
// the model itself with chosen self-attention maps replaced by the identity
// (each token attends only to itself, so the attention output is its value
// projection v), and guidance pushes away from it:
//   x0 = x0(c) + s_pag (x0(c) - x0_perturbed(c)),
// and with CFG (the paper's Eq. 13, diffusers' PAG pipelines):
//   x0 = x0(neg) + w(s) (x0(c) - x0(neg)) + s_pag (x0(c) - x0_perturbed(c)).
// The combination is affine at a fixed state, so it is the same in eps, x0
// or v form.
//
// How the perturbation enters: through the "<P>.probs" hook site of each
// chosen attention P (nn/attention.h), whose probabilities [B*heads, L, L]
// are replaced by the identity on the perturbed rows of the batch only. The
// cheaper "<P>.out" site cannot be used: it carries proj(attention), and the
// hook has neither v nor the projection. Identity probabilities times v are
// exactly v (one 1 per row), so this is the paper's perturbation, at the
// cost of the explicit attention path at those sites (49 tokens at the
// default model's middle block).
//
// One network call per NFE: the batch is [c; neg; c] under CFG (the last N
// rows perturbed) and [c; c] without it; where w(s) = 1 the negative branch
// is skipped. The rule owns the CFG part (scale schedule, interval, negative
// condition, rescale of the guided x0, the negative eps kept for CFG++) so
// that all three branches share the call; make_guidance builds it in place
// of CFGDenoiser when --pag is set. s_pag = 0 is not built (the base itself).
//
// Sites: attention module paths ("mid.attn.0", "up.1.attn.0", a prefix
// pattern "up.*"), default the middle block's self-attention (UNet
// "mid.attn.0"; DiT the block at depth/2). A site that never fires is an
// Error naming it. Verified in tests/test_guidance.cpp (PAG suite).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "tweedie/guide/guidance_rule.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/models/net_denoiser.h"

namespace tweedie {

// The network's default_attention_site() (its middle self-attention), or an
// Error for networks without one.
std::string middle_attention_site(const Network& net);

// "a,b,c" -> attention paths; Error naming --option for an empty one.
std::vector<std::string> attention_sites(const std::string& text, const std::string& option);

// probs [B*heads, L, L] with the rows of batch items [first, B) set to the
// identity (B = batch).
torch::Tensor identity_attention_rows(const torch::Tensor& probs, int64_t batch, int64_t first);

// How the perturbed branch's attention changes at each site: the hook-site
// suffix it acts on and the change of batch rows [first, batch) of the
// value there (x: the call's input, for image sizes). PAG's is the identity
// attention on ".probs"; SEG's (seg.h) blurs the queries on ".q".
struct AttentionPerturbation {
  std::string name = "PAG";  // in errors
  std::string suffix = ".probs";
  std::function<torch::Tensor(const torch::Tensor& value, int64_t batch, int64_t first, const torch::Tensor& x)>
      apply;  // empty: identity attention (PAG)
  // Which sites a hook acts on (empty: those ending in `suffix`); sites given
  // as prefix patterns ("P.*") are filtered by it.
  std::function<bool(const std::string& site)> acts_on = {};
  // For the error when a site never fires: what a site is, and an example.
  std::string what = "self-attention", sites_are = "attention paths like mid.attn.0";
};

struct PAGOptions {
  double scale = 0.0;              // s_pag
  std::vector<std::string> sites;  // attention paths; empty = middle_attention_site
  AttentionPerturbation perturbation = {};
  // Where the perturbed branch runs (empty: every call); elsewhere the rule is
  // its CFG alone. Skip-Layer Guidance's step window.
  std::function<bool(const HookContext&)> when = {};
};

class PAGDenoiser : public GuidanceRule {
 public:
  // inner: the denoiser to evaluate (the network with CADS, SAG or
  // AutoGuidance inside); net: the network whose attention is perturbed
  // (inner's own network). cfg: the CFG part (scale 1 = none).
  PAGDenoiser(DenoiserPtr inner, std::shared_ptr<NetDenoiser> net, PAGOptions opt, CFGOptions cfg = {});

 private:
  Prediction guide(const torch::Tensor& x, double s, const Cond& c) override;
  std::shared_ptr<NetDenoiser> net_;
  PAGOptions opt_;
  CFGOptions cfg_;
};

}  // namespace tweedie
