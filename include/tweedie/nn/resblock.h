// ADM residual block (Dhariwal & Nichol 2021, guided-diffusion unet.py
// ResBlock; Ho et al. 2020 before it):
//   h = conv3x3(SiLU(GroupNorm(x)))                 [optionally up/down-sampled
//                                                    between SiLU and conv]
//   e = Linear(SiLU(emb))                            [C_out, or 2 C_out]
//   scale-shift:  h = GroupNorm(h) * (1 + scale) + shift   (AdaGN)
//   otherwise:    h = GroupNorm(h + e)
//   h = conv3x3(Dropout(SiLU(h)))                    (zero-initialized)
//   out = skip(x) + h,  skip = identity or 1x1 conv when channels change.
// Hook site "<path>.out" carries the block output.
// ldm_names registers the same layers under the names of LDM / SD checkpoints
// (openaimodel.py ResBlock: in_layers.{0: norm, 2: conv}, emb_layers.1,
// out_layers.{0: norm, 3: conv}, skip_connection) instead of in_norm, in_conv,
// emb_proj, out_norm, out_conv, skip. Verified in
// tests/test_networks.cpp (shapes, gradients, bf16 agreement).
#pragma once
#include <string>

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include "tweedie/nn/hooks.h"
#include "tweedie/nn/norm.h"

namespace tweedie {

enum class Resample { None, Up, Down };

struct ResBlockOptions {
  int64_t in_channels = 0, out_channels = 0, emb_dim = 0, groups = 32;
  double dropout = 0.0;
  bool scale_shift = true;
  Resample resample = Resample::None;  // ADM's resblock_updown
  bool ldm_names = false;              // LDM / SD checkpoint names (above)
};

class ResBlockImpl : public torch::nn::Module {
 public:
  explicit ResBlockImpl(const ResBlockOptions& o, const std::string& site = "");
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& emb, const Hooks* hooks = nullptr);

  GroupNorm32 in_norm{nullptr}, out_norm{nullptr};
  torch::nn::Conv2d in_conv{nullptr}, out_conv{nullptr}, skip{nullptr};
  torch::nn::Linear emb_proj{nullptr};
  torch::nn::Dropout dropout{nullptr};

 private:
  ResBlockOptions o_;
  std::string site_out_;
};
TORCH_MODULE(ResBlock);

}  // namespace tweedie
