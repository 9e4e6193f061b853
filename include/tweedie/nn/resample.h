// Resolution changes of the ADM UNet (guided-diffusion unet.py):
// - Downsample: 3x3 conv with stride 2 and padding 1 ("op"), or 2x2 average
//   pooling when use_conv is false (then the channel count cannot change);
// - Upsample: nearest-neighbour x2, then a 3x3 conv ("conv") if use_conv.
// Verified in tests/test_networks.cpp (UNet shapes at 28x28 and 32x32).
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/types.h>

namespace tweedie {

class DownsampleImpl : public torch::nn::Module {
 public:
  DownsampleImpl(int64_t channels, int64_t out_channels, bool use_conv);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d op{nullptr};
};
TORCH_MODULE(Downsample);

class UpsampleImpl : public torch::nn::Module {
 public:
  UpsampleImpl(int64_t channels, int64_t out_channels, bool use_conv);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample);

// The parameter-free versions (used inside up/down residual blocks).
torch::Tensor upsample_nearest2x(const torch::Tensor& x);
torch::Tensor avg_pool2x(const torch::Tensor& x);

}  // namespace tweedie
