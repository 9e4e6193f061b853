// Attention-loss guidance: a loss on the cross-attention maps of one
// conditional network call, whose gradient moves the sampling state before
// a step (Attend-and-Excite, attend_and_excite.h; layout guidance,
// layout_guidance.h). Unlike the rules of guidance.h these change the state,
// not the prediction: the Stable Diffusion pipeline hands their update to
// generate() (GenerateOptions::update), which runs those steps one at a
// time. Their options are registered as guidance rules (flags, ranges,
// help) whose build leaves the denoiser as it is.
//
// The maps: on every cross-attention layer ("*attn2.probs") the
// probabilities of the call [N * heads, h * w, Lk], averaged over heads ->
// [N, h * w, Lk], with autograd to the state. A word's map is its tokens'
// columns summed.
// Verified in tests/test_attention_guidance.cpp.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "tweedie/models/net_denoiser.h"
#include "tweedie/models/prompt_weighting.h"

namespace tweedie {

struct CrossAttentionLayer {
  std::string site;     // "output_blocks.3.1.transformer_blocks.0.attn2"
  int64_t h = 0, w = 0;  // the map's grid
  torch::Tensor probs;  // [N, h * w, Lk], averaged over heads
};

// The conditional call's cross-attention maps at x (level s), with gradients
// to x when x requires them. Error when the network has none.
std::vector<CrossAttentionLayer> cross_attention_maps(NetDenoiser& net, const torch::Tensor& x, double s,
                                                      const Cond& c);

// The maps of the layers at the side nearest a quarter of the latent's
// height lh (the paper's 16 x 16 for SD at 512; quarter_side_height),
// averaged: [N, h * w, Lk], with their grid in h, w.
torch::Tensor quarter_side_maps(const std::vector<CrossAttentionLayer>& maps, int64_t lh, int64_t& h, int64_t& w);
// Attend-and-Excite's and LEDITS++'s 3 x 3 smoothing of maps [N, 1, h, w]:
// per axis exp(-(d / (2 sigma))^2) at d = -1, 0, 1 with sigma 0.5 (as their
// code writes the Gaussian), normalized; reflected edges (none below 2 x 2).
torch::Tensor smooth_attention(const torch::Tensor& maps);

// A loss per sample [N] from the maps.
using AttentionLoss = std::function<torch::Tensor(const std::vector<CrossAttentionLayer>&)>;

// The loss at x and its gradient with respect to x (sampling space).
struct LossAndGradient {
  torch::Tensor loss, grad;
};
LossAndGradient attention_loss_gradient(NetDenoiser& net, const torch::Tensor& x, double s, const Cond& c,
                                        const AttentionLoss& loss);

// The named words' token positions (names: words of the prompt, any case);
// Error naming --option for a word the prompt does not have.
std::vector<std::vector<int64_t>> word_tokens(const std::vector<PromptWord>& words,
                                              const std::vector<std::string>& names, const std::string& option);

// A state update of generate(): x at step `step` of `steps`, level s.
using StateUpdateFn = std::function<torch::Tensor(int step, int steps, double s, const torch::Tensor& x, const Cond& c)>;
struct StateUpdate {
  StateUpdateFn fn;  // empty: none
  int steps = 0;     // steps 0..steps-1 get it
};
// One update after the other, over the longer range.
StateUpdate chain(const StateUpdate& a, const StateUpdate& b);

}  // namespace tweedie
