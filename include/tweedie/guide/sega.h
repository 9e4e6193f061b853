// SEGA, semantic guidance (Brack et al. 2023, "SEGA: Instructing
// Text-to-Image Models using Semantic Guidance"; diffusers'
// SemanticStableDiffusionPipeline): besides CFG's direction, each edit
// concept e_j (a prompt) adds its own direction, toward it or away from it,
// kept only where it is strong:
//   psi_j = +-(eps(e_j) - eps(neg)) s_j,
//   psi_j <- psi_j where |psi_j| >= its lambda-quantile over the pixels of
//            its channel (per sample), 0 elsewhere,
//   g     = sum_j psi_j + s_m nu,      nu <- beta nu + (1 - beta) g,
//   eps   = eps(neg) + w (eps(c) - eps(neg)) + g   from step `warmup` on,
// with the momentum nu accumulated from the first step (also during the
// warm-up) and a concept contributing nothing from its `cooldown` step on.
// The paper's defaults: s_j 5, lambda 0.9, warm-up 10 steps, s_m 0.1,
// beta 0.4. All branches run in one network call [c; neg; e_1; ...; e_k]; the
// rule owns CFG's part (negative condition, schedule, rescale) like PAG. It
// works in eps, as the paper does (the quantile mask is the same in any form;
// the momentum mixes levels and is not).
//
// Masks (LEDITS++, Brack et al. 2024, "LEDITS++: Limitless Image Editing
// using Text-to-Image Models"): instead of the per-channel quantile, a
// concept's direction can be kept where its cross-attention is strong
// (attention: the concept branch's maps of the concept's tokens at the
// quarter side, smoothed (smooth_attention), >= their lambda-quantile,
// scaled up to the latent), or where that holds and its size summed over
// channels reaches its lambda-quantile too (intersect, LEDITS++'s default).
//
// The concepts' conditions are attached as "sega-concepts"
// (std::vector<Cond>, each for the batch; the Stable Diffusion pipeline
// encodes the --sega prompts). With no concept past its cool-down and no
// momentum it is CFG exactly; a concept whose prompt is the prompt itself
// at lambda = 0 adds s_j (eps(c) - eps(neg)).
// Verified in tests/test_sega.cpp.
#pragma once
#include <string>
#include <vector>

#include "tweedie/guide/cfg.h"
#include "tweedie/guide/guidance_rule.h"
#include "tweedie/models/net_denoiser.h"

namespace tweedie {

struct SegaConcept {
  std::string prompt;
  bool away = false;  // "-prompt": guide away from it
};
// "a hat|-glasses" -> concepts ('|'-separated, a leading '-' reverses, '+' is
// allowed); Error naming --sega for an empty one.
std::vector<SegaConcept> parse_sega_concepts(const std::string& text);

enum class SegaMask { Channel, Attention, Intersect };
// "channel" | "attention" | "intersect"; Error naming --option otherwise.
SegaMask parse_sega_mask(const std::string& text, const std::string& option);

struct SegaOptions {
  std::vector<bool> away;       // per concept
  std::vector<double> scales;   // s_j per concept
  double threshold = 0.9;       // lambda in [0, 1)
  int warmup = 10;              // steps before g is applied
  double cooldown = INFINITY;   // step from which the concepts stop (inf: never)
  double momentum = 0.1;        // s_m
  double beta = 0.4;            // momentum decay in [0, 1)
  SegaMask mask = SegaMask::Channel;
  std::vector<std::vector<int64_t>> tokens;  // attention masks: each concept's context positions
};

class SegaDenoiser : public GuidanceRule {
 public:
  // net: the network under inner, whose cross-attention the attention masks read.
  SegaDenoiser(DenoiserPtr inner, CFGOptions cfg, SegaOptions sega, std::vector<Cond> concepts,
               std::shared_ptr<NetDenoiser> net = nullptr);

 protected:
  Prediction guide(const torch::Tensor& x, double s, const Cond& c) override;

 private:
  CFGOptions cfg_;
  SegaOptions o_;
  std::vector<Cond> concepts_;
  std::shared_ptr<NetDenoiser> net_;
  torch::Tensor momentum_;
  int last_step_ = -1;
  double last_s_ = 0;
};

}  // namespace tweedie
