// Conditioning by modulation of normalized activations.
//
// - AdaGN (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", sec. 3):
//   h = GroupNorm(h) * (1 + scale) + shift, with (scale, shift) a projection
//   of the time/class embedding; per channel of an NCHW tensor.
// - adaLN (Peebles & Xie 2023, DiT): x = LayerNorm(x) * (1 + scale) + shift per
//   token feature, and adaLN-Zero: the projection producing (shift, scale,
//   gate, ...) is zero-initialized so every residual block starts as the
//   identity (gate = 0).
// Verified in tests/test_networks.cpp (DiT output is exactly zero at init;
// the formulas against direct evaluation).
#pragma once
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include "tweedie/nn/norm.h"

namespace tweedie {

// AdaGN: norm(h) * (1 + scale) + shift, scale/shift [N, C] broadcast over H, W.
torch::Tensor ada_group_norm(GroupNorm32& norm, const torch::Tensor& h, const torch::Tensor& scale,
                             const torch::Tensor& shift);

// adaLN modulation of tokens: x [N, L, D] * (1 + scale[N, D]) + shift[N, D].
torch::Tensor modulate(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale);

// SiLU then a zero-initialized Linear(cond_dim, chunks * dim); forward splits
// the result into `chunks` tensors [N, dim]. The Linear is registered as "1"
// so the names match DiT's nn.Sequential(SiLU, Linear) ("adaLN_modulation.1.weight").
class AdaLNModulationImpl : public torch::nn::Module {
 public:
  AdaLNModulationImpl(int64_t cond_dim, int64_t dim, int64_t chunks);
  std::vector<torch::Tensor> forward(const torch::Tensor& c);
  torch::nn::Linear linear{nullptr};

 private:
  int64_t chunks_;
};
TORCH_MODULE(AdaLNModulation);

}  // namespace tweedie
