// A source and a target sampled together, for the edits that let the target
// borrow from the source inside the network (Prompt-to-Prompt, MasaCtrl):
// one batch [source rows; target rows] from one starting latent, each
// network call under the branch names "source" and "target" (nn/hooks.h),
// with CFG around the pair. The source is generated from unit noise or is a
// real image, inverted first (schedule_tail at `strength`) by
//   direct           DDIM inversion at w = 1, and after every step the source
//                    rows are set back onto that path, so the source is the
//                    input exactly (Direct Inversion / PnP Inversion, Ju et
//                    al. 2024);
//   ddim             DDIM inversion at w = 1, decoded freely;
//   null-text        null-text inversion at w (Mokady et al. 2023): the
//                    optimized per-step null contexts are CFG's negative
//                    branch of both rows;
//   negative-prompt  the source prompt as CFG's negative branch of both
//                    rows (Miyake et al. 2023).
// Verified through its users (tests/test_attention_edits.cpp): with nothing borrowed the rows are the two
// prompts' own samples; direct inversion returns the input exactly.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "tweedie/core/method_options.h"
#include "tweedie/edit/inversion.h"
#include "tweedie/models/denoiser.h"
#include "tweedie/models/net_denoiser.h"
#include "tweedie/models/prompt_weighting.h"
#include "tweedie/nn/hooks.h"

namespace tweedie {

struct PairedOptions {
  double cfg = 7.5;
  std::string sampler = "ddim";      // invertible for real images
  double strength = 1.0;             // real images: share of the schedule inverted and re-run
  std::string inversion = "direct";  // real images: direct | ddim | null-text | negative-prompt
  std::string who = "edit";          // names the method in errors ("p2p")
};

// The edit methods' --inversion option (PairedOptions::inversion), and the
// pair's options from an edit request (its cfg, sampler, strength and that option).
MethodOption paired_inversion_option();
struct EditRequest;
PairedOptions paired_options(const EditRequest& r);

class PairedSampling {
 public:
  // x: [N, C, h, w] unit noise (from_noise) or the image's latent; the
  // conditions from one StableDiffusion::conditions call. Inverts now.
  PairedSampling(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x, bool from_noise,
                 const Cond& source, const Cond& target, const PairedOptions& o);

  NetDenoiser& network_model() { return *net_; }
  int steps() const { return int(levels_.size()) - 1; }  // 0: nothing to do (strength 0)
  const std::vector<double>& levels() const { return levels_; }
  const torch::Tensor& start() const { return start_; }  // float64 [N, ...] at levels()[0]

  // Sample the pair; step_edit(i, y) may change the pair's state [2N, ...]
  // after step i (the source already set back onto its path for direct
  // inversion). Returns {source, target}, float64.
  std::pair<torch::Tensor, torch::Tensor> run(const std::function<torch::Tensor(int, const torch::Tensor&)>& step_edit = {},
                                              torch::Generator gen = {});

 private:
  std::shared_ptr<NetDenoiser> net_;
  DenoiserPtr model_;
  Cond source_, target_;
  PairedOptions o_;
  bool from_noise_;
  std::vector<double> levels_;
  torch::Tensor start_;
  Inversion inv_;
};

// The rows of a network call holding the source and the target (paired in
// order), of the conditional half only when cond_only (all rows of the
// branch when no CFG split the call); undefined when the call is not a
// pair's. B: the call's batch.
struct PairRows {
  torch::Tensor source, target;  // int64 row indices
  int64_t B = 0;
  bool defined() const { return source.defined(); }
};
PairRows pair_rows(const HookContext& ctx, bool cond_only);

// While the returned hook lives: at the sites matching `pattern` (values
// batch first: [B, ...]), the target rows of a pair's network calls take the
// source rows' values at the steps where when(step) holds; of the
// conditional half only when cond_only. observe(site, step, source rows,
// target rows as used) sees every pair's call at those sites, inside the
// steps or not. (MasaCtrl's keys and
// values, Plug-and-Play's features and queries/keys, Prompt-to-Prompt's
// self-attention maps.)
using PairObserver = std::function<void(const std::string& site, int step, const torch::Tensor& source,
                                        const torch::Tensor& target)>;
std::unique_ptr<ScopedHook> share_source_rows(Hooks& hooks, const std::string& pattern, std::function<bool(int)> when,
                                              bool cond_only, PairObserver observe = {});

// The sites matching `pattern` that one forward call on x's first sample at
// level s under c visits, in call order (each once), with the shapes of
// their values.
struct SiteShape {
  std::string site;
  std::vector<int64_t> shape;
};
std::vector<SiteShape> visited_sites(NetDenoiser& net, const std::string& pattern, const torch::Tensor& x, double s,
                                     const Cond& c);

// The self-attention layers of a network in the order one forward call
// runs them, with their query counts (visited_sites of "*attn1.q").
struct AttentionLayer {
  std::string site;  // module path ("output_blocks.4.1.transformer_blocks.0.attn1")
  int64_t tokens = 0;
};
std::vector<AttentionLayer> self_attention_layers(NetDenoiser& net, const torch::Tensor& x, double s, const Cond& c);

// Attention maps of the attention-control edits.
// The grid (h, w) of an attention with `tokens` queries over an lh x lw
// latent: the latent grid halved until it fits (h * w != tokens when none does).
std::pair<int64_t, int64_t> attention_grid(int64_t tokens, int64_t lh, int64_t lw);
// Of several map heights, the one nearest a quarter of the latent's height lh
// (log scale; ties: the finer): the paper's 16x16 maps for SD at 512.
int64_t quarter_side_height(const std::vector<int64_t>& heights, int64_t lh);
// The map of some context tokens from attention probabilities P [R, heads,
// Lq, Lk]: summed over the tokens, averaged over heads -> [R, Lq] (zeros
// when there are no tokens).
torch::Tensor word_attention(const torch::Tensor& P, const std::vector<int64_t>& tokens);

// "a, b,c" -> {"a", "b", "c"}: comma-separated, each trimmed (empty entries kept).
std::vector<std::string> comma_list(const std::string& s);
// The context positions of the named words ("w1,w2", any case) in a prompt
// (StableDiffusion::word_positions); none when absent.
std::vector<int64_t> prompt_word_tokens(const std::vector<PromptWord>& words, const std::string& names);

}  // namespace tweedie
