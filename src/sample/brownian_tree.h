// Brownian tree: a Brownian path W(s) on [s_lo, s_hi] that can be queried at
// any level in any order and always gives the same value for a seed
// (equivalent in law to torchsde's BrownianTree, used by k-diffusion's
// BrownianTreeNoiseSampler).
//
// W(s_lo) = 0 and W(s_hi) ~ N(0, s_hi - s_lo). A query descends the dyadic
// bisection of [s_lo, s_hi]: the midpoint of a node interval [l, h] with known
// ends is the Brownian-bridge draw
//     W(m) = (W(l) + W(h)) / 2 + sqrt((h - l) / 4) z_k,
// where z_k comes from a CPU generator seeded by (seed, k), k the node's heap
// index. Descent stops at a node narrower than 1e-10 of the range, inside
// which W is linear. The path therefore depends only on the seed, not on
// which levels a sampler asks for: coarse and fine step lists see the same
// noise. Internal to src/sample.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <map>

namespace tweedie {

class SamplerRun;

class BrownianTree {
 public:
  // A path shaped like `like` (its dtype and device) on [s_lo, s_hi].
  BrownianTree(const torch::Tensor& like, double s_lo, double s_hi, uint64_t seed);
  // The path for a sampler run: over [smallest positive level, largest level],
  // seeded with one draw from run.gen.
  BrownianTree(SamplerRun& run, const torch::Tensor& like);

  // W(s) in float64 on the CPU; s is clamped to [s_lo, s_hi].
  torch::Tensor W(double s);
  // (W(s_next) - W(s)) / sqrt|s_next - s|: standard normal (k-diffusion's
  // noise_sampler(sigma, sigma_next)).
  torch::Tensor noise(double s, double s_next);

 private:
  torch::Tensor draw(uint64_t k) const;  // z_k, on the CPU in float64
  std::vector<int64_t> shape_;
  torch::TensorOptions opt_;
  double lo_, hi_;
  uint64_t seed_;
  torch::Tensor w_hi_;                     // W(s_hi), float64 CPU
  std::map<double, torch::Tensor> cache_;  // W at the levels asked for (float64 CPU)
};

}  // namespace tweedie
