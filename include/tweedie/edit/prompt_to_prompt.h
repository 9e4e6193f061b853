// Prompt-to-Prompt (Hertz, Mokady, Tenenbaum, Aberman, Pritch & Cohen-Or
// 2023, "Prompt-to-Prompt Image Editing with Cross-Attention Control", ICLR).
//
// The source prompt's image and the target prompt's are sampled together,
// from one starting latent, as one batch: rows [source; target] under the
// branch names "source" and "target" (nn/hooks.h), with CFG around them
// (edit/paired_sampling.h). The
// target borrows the source's attention through hooks on the UNet's
// attention probabilities, on the conditional rows only (as the paper's
// code): for the first cross_replace of the steps, at every cross-attention
// layer, target token j's map becomes
//     alpha_j sum_i P_src[:, i] M[i, j] + (1 - alpha_j) P_tgt[:, j],
// times the reweighting factor of j; for the first self_replace of the
// steps, the target's self-attention maps are the source's at every layer
// below the latent's own resolution (SD at 512: 32x32 and coarser, the
// paper code's `<= 32 ** 2`). M and alpha (TokenMapping) come from the words:
//   word swap   prompts of equal word count; word k's tokens map to word k's
//               (one to one, or the source word's mass spread evenly over the
//               target word's tokens when their counts differ); alpha = 1;
//   refinement  the words aligned globally (Needleman-Wunsch: match +1,
//               mismatch -1, gap 0); aligned words map token to token, the
//               target's added words keep their own maps (alpha = 0);
//   reweight    factors c_j on the target words' tokens ("word=2,other=0.5"),
//               applied to the mapped maps, e.g. with the same prompt twice.
// Start and end tokens (BOS, EOS, padding) map position to position.
// Local blending (--blend words): the blend words' cross-attention maps at
// the resolution nearest a quarter of the latent's side (SD at 512: 16x16,
// the paper's), summed over their tokens, averaged over heads and layers and
// accumulated over the steps, resized bilinearly to the latent's grid and
// max-pooled (2k+1)^2 with k = round(latent side / 16) (for SD's 64x64
// latents the paper's 3x3 on 16x16 maps), scaled to their maximum and
// thresholded, in the source and in the target; after each step past blend_start of them, the
// target state is source + mask (target - source) with the union of the two
// masks, so outside it the target is the source exactly.
//
// Sources: a seed (x is unit noise, the source is generated as `tweedie
// generate` would with the same seed, sampler and CFG), or a real image (x is
// its latent) inverted first: direct (default: the source is the input
// exactly), ddim, null-text or negative-prompt (edit/paired_sampling.h,
// shared with MasaCtrl).
// Verified in tests/test_attention_edits.cpp.
#pragma once
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "tweedie/edit/paired_sampling.h"

namespace tweedie {

// target column j = alpha_j * sum_i source column i * mapper[i, j] + (1 - alpha_j) * target column j
struct TokenMapping {
  torch::Tensor mapper;  // float32 [L, L]
  torch::Tensor alpha;   // float32 [L]
};

// `length`: the context length L (77 for one CLIP window). Errors name the
// problem (different word counts for a swap, words beyond one window).
TokenMapping p2p_word_swap(const std::vector<PromptWord>& source, const std::vector<PromptWord>& target, int64_t length);
TokenMapping p2p_refinement(const std::vector<PromptWord>& source, const std::vector<PromptWord>& target, int64_t length);
// Per-token factors [L] (1 except the tokens of the named target words) from
// "word=factor[,word=factor...]"; Error for a word not in the target prompt.
torch::Tensor p2p_reweight(const std::vector<PromptWord>& target, const std::string& spec, int64_t length);

struct PromptToPromptOptions {
  std::string mode = "auto";     // replace (word swap) | refine | auto: replace if the word counts agree
  double cross_replace = 0.8;    // share of the steps with the source's cross-attention injected
  double self_replace = 0.4;     // share of the steps with the source's self-attention injected
  std::string reweight;          // "word=factor,..." on target words ("": none)
  std::string blend;             // local blending words "w1,w2" ("": no blending)
  double blend_threshold = 0.3;
  double blend_start = 0.2;      // share of the steps before blending starts
  PairedOptions pair;            // cfg, sampler, strength, inversion (edit/paired_sampling.h)
  // Called at every controlled attention site of every network call with
  // the conditional rows' maps [N, heads, Lq, Lk]: the source's and the
  // target's as used (after the edit); cross: a cross-attention site. For
  // inspection (attention maps of an edit) and tests.
  std::function<void(const std::string& site, int step, bool cross, const torch::Tensor& source,
                     const torch::Tensor& target)>
      on_attention;
};

struct PromptToPromptResult {
  torch::Tensor source;  // the source branch's final state [N, ...]
  torch::Tensor edited;  // the target branch's [N, ...]
  torch::Tensor mask;    // local blending's last mask [N, 1, h, w] (undefined without blending)
};

// model: a network denoiser with cross-attention (an SD UNet). x: [N, C, h, w]
// latents: unit noise when from_noise, else the image's latent. The
// conditions come from one StableDiffusion::conditions call (same context
// length, shared negative prompt); the words from word_positions().
PromptToPromptResult prompt_to_prompt(const DenoiserPtr& model, const std::vector<double>& sigmas,
                                      const torch::Tensor& x, bool from_noise, const Cond& source, const Cond& target,
                                      const std::vector<PromptWord>& source_words,
                                      const std::vector<PromptWord>& target_words, const PromptToPromptOptions& o,
                                      torch::Generator gen = {});

}  // namespace tweedie
