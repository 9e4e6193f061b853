// Layout guidance (Chen, Laina & Vedaldi 2024, "Training-Free Layout
// Control with Cross-Attention Guidance", backward guidance): boxes for
// words of the prompt; before each of the first steps the state moves so
// that each word's cross-attention falls inside its box:
//   r_i,l = sum_{p in box_i} A_l[p, i] / sum_p A_l[p, i]   (word i's map at layer l)
//   E     = sum_l sum_i (1 - r_i,l)^2 / (number of words)
// over the middle block's and the decoder's cross-attention layers, and
//   x <- x - eta sigma^2 grad_x E
// in the sampling space (the reference's update of the k-diffusion state,
// sigma = the level s), repeated up to `iterations` times per step while
// E > threshold (the reference: eta 30, 5 iterations, threshold 0.2, the
// first 10 of 50 steps). Boxes are fractions of the image, x0,y0,x1,y1 with
// (0, 0) the top left; a map pixel is inside when its centre is.
// Verified in tests/test_attention_guidance.cpp.
#pragma once
#include <string>
#include <vector>

#include "tweedie/guide/attention_loss.h"

namespace tweedie {

struct WordBox {
  std::string word;
  double x0 = 0, y0 = 0, x1 = 1, y1 = 1;
};
// "sneaker:0,0,0.5,0.5|bag:0.5,0.5,1,1" -> boxes; Error naming --layout.
std::vector<WordBox> parse_layout(const std::string& text);

// E per sample from the maps, for words given by token positions and their boxes.
torch::Tensor layout_loss(const std::vector<CrossAttentionLayer>& maps, const std::vector<std::vector<int64_t>>& words,
                          const std::vector<WordBox>& boxes);

struct LayoutOptions {
  double scale = 30;      // eta
  double until = 0.2;     // fraction of the steps that get updates
  int iterations = 5;     // most updates per step
  double threshold = 0.2;  // no update once E is below
};

StateUpdate layout_guidance(std::shared_ptr<NetDenoiser> net, std::vector<std::vector<int64_t>> words,
                            std::vector<WordBox> boxes, LayoutOptions o, int steps);

}  // namespace tweedie
