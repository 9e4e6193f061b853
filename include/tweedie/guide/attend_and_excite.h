// Attend-and-Excite (Chefer et al. 2023, "Attend-and-Excite:
// Attention-Based Semantic Guidance for Text-to-Image Diffusion Models"):
// before each of the first steps, the state moves so that every subject
// word of the prompt gets a strong cross-attention peak somewhere:
//   A    = the conditional call's cross-attention maps at the quarter-side
//          resolution (16 x 16 for SD at 512), averaged over those layers;
//   T    = softmax over the prompt's text tokens (BOS and EOS excluded) of
//          100 A (the paper's sharpening);
//   m_i  = max over pixels of subject i's map (its tokens' columns of T
//          summed), smoothed by a 3 x 3 Gaussian (sigma 0.5, as the
//          reference code writes it: exp(-(d / 2 sigma)^2)) with reflected
//          edges;
//   L    = max_i (1 - m_i)   (the most neglected subject);
//   z_t <- z_t - alpha_t grad_{z_t} L,  alpha_t = scale sqrt(1 - t / 2 (steps - 1))
// in the model's state z = c_in x (the DDPM latent for VP models), i.e.
// x <- x - alpha_t grad_x L / c_in^2, for steps t < until * steps (the paper:
// scale 20, the first 25 of 50 steps). At the steps 0, 0.2 and 0.4 of the
// run (the paper's 0, 10, 20 of 50) it first refines: repeated updates until
// L < 1 - {0.05, 0.5, 0.8} or `refine` iterations. Samples are updated each
// by its own loss.
// Verified in tests/test_attention_guidance.cpp.
#pragma once
#include <string>
#include <vector>

#include "tweedie/guide/attention_loss.h"

namespace tweedie {

// L per sample from the maps, for subjects given by token positions; `text`:
// the prompt's text token positions (1..last), latent grid lh x lw.
torch::Tensor attend_and_excite_loss(const std::vector<CrossAttentionLayer>& maps,
                                     const std::vector<std::vector<int64_t>>& subjects, int64_t last_token,
                                     int64_t lh);

// The prompt's last text token (its words' largest position; EOS follows).
int64_t last_text_token(const std::vector<PromptWord>& words);

struct AttendExciteOptions {
  double scale = 20;    // alpha's scale factor
  double until = 0.5;   // fraction of the steps that get updates
  int refine = 20;      // most refinement iterations at the refinement steps (0: none)
};

StateUpdate attend_and_excite(std::shared_ptr<NetDenoiser> net, std::vector<std::vector<int64_t>> subjects,
                              int64_t last_token, AttendExciteOptions o, int steps);

}  // namespace tweedie
