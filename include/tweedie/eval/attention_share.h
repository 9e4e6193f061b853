// Where a token's cross-attention goes: the share of its attention mass that
// falls inside an image region, per cross-attention layer and sampler step.
// It measures whether a text-to-image model's per-token maps (the maps
// Prompt-to-Prompt, attention control and attend-and-excite act on) mean
// something: for FashionCanvas, an item word's mass should concentrate in
// its cell (a uniform map puts 1/4 of it there).
//
// For a target (a row of the conditional batch, the context positions of a
// word's tokens, a box in image fractions), at every "*.attn2.probs" site
// (cross-attention probabilities [B*heads, Lq, Lk], nn/attention.h):
//   m(q) = sum over the word's tokens of p(q, token), averaged over heads;
//   share = sum of m over the queries inside the box / sum of m over all.
// Queries are the layer's h x w grid (h, w found from Lq and the latent
// aspect ratio); a query is inside when its cell centre is. Only the rows
// the guidance rules call "cond" are read (all rows when no rule branches
// the call), so CFG's unconditional half does not count.
// Verified in tests/test_attention_share.cpp (a hand-made attention map on a
// real UNet call gives the closed-form share, rows of the uncond branch are
// skipped, steps are recorded from the sampler).
#pragma once
#include <array>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tweedie/models/network.h"
#include "tweedie/nn/hooks.h"

namespace tweedie {

struct AttentionTarget {
  int64_t row = 0;                 // row of the conditional batch
  std::vector<int64_t> tokens;     // positions in the context
  std::array<double, 4> box{};     // top, left, bottom, right as fractions of the image, in [0, 1]
};

class AttentionShare {
 public:
  // Observes net's cross-attention while this lives; latents are h x w.
  AttentionShare(Network& net, int64_t latent_h, int64_t latent_w);
  ~AttentionShare();
  // The targets of the next calls, for batches of `samples` conditional rows
  // (e.g. the next chunk of prompts); calls record nothing until set.
  void set_targets(std::vector<AttentionTarget> targets, int64_t samples);

  struct Tally {
    double sum = 0;
    int64_t count = 0;
    double mean() const { return count ? sum / double(count) : -1; }
  };
  // site (without ".probs") -> sampler step -> share, summed over targets and calls.
  const std::map<std::string, std::map<int, Tally>>& tallies() const { return tallies_; }

  // The share of one attention map m [h, w] (nonnegative) inside a box.
  static double share_inside(const torch::Tensor& m, const std::array<double, 4>& box);

 private:
  torch::Tensor observe(const std::string& site, const torch::Tensor& probs, const HookContext& ctx);
  std::vector<AttentionTarget> targets_;
  int64_t lh_, lw_, samples_ = 0;
  std::map<std::string, std::map<int, Tally>> tallies_;
  std::unique_ptr<ScopedHook> hook_;
};

}  // namespace tweedie
