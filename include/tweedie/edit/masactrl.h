// MasaCtrl (Cao, Wang, Qi, Shan, Qie & Zheng 2023, "MasaCtrl: Tuning-Free
// Mutual Self-Attention Control for Consistent Image Synthesis and
// Editing", ICCV).
//
// The source and the target prompt are sampled together from one starting
// latent (edit/paired_sampling.h: a seed, or a real image inverted). From
// step start_step * steps on, at the self-attention layers from start_layer
// on (in the order a forward call runs them; the paper's 10 of SD 1.x's 16,
// the decoder's finer layers), the target's queries attend to the source's
// keys and values, in both CFG branches: the target keeps the source's
// content (an object's look) while its layout and pose follow its own
// prompt, since the early steps and coarse layers, which fix them, are its
// own.
//
// With mask words (the object, in either prompt), foreground masks come from
// the cross-attention of those words: per sample, in the call being made,
// the conditional rows' maps at the resolution nearest a quarter of the
// latent's side (the paper's 16x16 for SD at 512) averaged over the layers
// run so far and over heads, scaled to [0, 1] (min-max) and thresholded
// (mask_threshold, the paper's 0.1), in the source and in the target. Then
// a target query inside the target's mask attends only to the source's
// foreground keys, and one outside only to its background keys: the
// attention probabilities renormalized over those keys (the paper's -inf
// fill before the softmax), so object and background do not mix. A query
// whose allowed keys are all masked keeps the unrestricted attention.
// Verified in tests/test_attention_edits.cpp.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "tweedie/edit/paired_sampling.h"

namespace tweedie {

struct MasaCtrlOptions {
  double start_step = 0.08;           // share of the steps before control starts (the paper's 4 of 50)
  std::string start_layer = "auto";   // first controlled self-attention layer (call order); auto: 10/16 of them
  std::string mask;                   // words whose cross-attention gives the foreground ("w1,w2"); "": no masks
  double mask_threshold = 0.1;
  PairedOptions pair;                 // cfg, sampler, strength, inversion
  // Called at every controlled site of every network call: at "<layer>.k"
  // with the source rows' keys and the keys the target rows use, at
  // "<layer>.probs" (masks only) with the source rows' and the target rows'
  // probabilities as used. For inspection and tests.
  std::function<void(const std::string& site, int step, const torch::Tensor& source, const torch::Tensor& target)>
      on_attention;
};

struct MasaCtrlResult {
  torch::Tensor source, edited;   // float64 [N, ...]
  std::vector<std::string> layers;  // the controlled self-attention layers
};

MasaCtrlResult masactrl(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x,
                        bool from_noise, const Cond& source, const Cond& target,
                        const std::vector<PromptWord>& source_words, const std::vector<PromptWord>& target_words,
                        const MasaCtrlOptions& o, torch::Generator gen = {});

}  // namespace tweedie
