// Resolution changes of the ADM UNet (guided-diffusion unet.py):
// - Downsample: 3x3 conv with stride 2 and padding 1 ("op"), or 2x2 average
//   pooling when use_conv is false (then the channel count cannot change);
// - Upsample: nearest-neighbour x2, then a 3x3 conv ("conv") if use_conv.
//   In inference (no autograd) the two run as one sub-pixel convolution on
//   the low-resolution input (upsample_conv3x3), 2.25x fewer multiply-adds.
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

// The phase kernels of upsample_conv3x3, derived from a 3x3 weight and kept
// until the weight changes (other memory, dtype or in-place version); the
// bias (4 copies) is taken anew each call. The source weight's storage is
// held, so its address cannot be reused by another weight while cached.
struct SubpixelKernels {
  torch::Tensor weight, bias;  // [4 Cout, Cin, 2, 2], [4 Cout]
  c10::Storage storage;        // the source weight's
  const void* source = nullptr;
  int64_t version = -1;
  c10::ScalarType dtype = c10::ScalarType::Undefined;
};

// conv3x3(upsample_nearest2x(x)) with padding 1, computed without the
// upsampled image: output pixel (2i + a, 2j + b) only sees input rows
// {i - 1, i} (a = 0) or {i, i + 1} (a = 1), and likewise for columns, so
// each of the four phases (a, b) is a 2x2 convolution of x whose taps are
// sums of the 3x3 taps (rows: a = 0 -> [w0, w1 + w2], a = 1 -> [w0 + w1, w2];
// columns alike). All four run as one 2x2 convolution with 4 Cout outputs
// and padding 1, whose (H + 1) x (W + 1) output holds phase (a, b) at offset
// (a, b); the phases are then interleaved. 16 instead of 36 multiply-adds per
// input pixel and output channel. Equal to the plain path up to rounding
// (the summed taps are formed in float32 or better, then cast to the
// weight's dtype).
// Inference only (no autograd through the cached kernels): with grad mode on
// or without a cache it runs the plain upsample + conv.
torch::Tensor upsample_conv3x3(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                               SubpixelKernels* cache);

class UpsampleImpl : public torch::nn::Module {
 public:
  UpsampleImpl(int64_t channels, int64_t out_channels, bool use_conv);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d conv{nullptr};

 private:
  SubpixelKernels kernels_;
};
TORCH_MODULE(Upsample);

// The parameter-free versions (used inside up/down residual blocks).
torch::Tensor upsample_nearest2x(const torch::Tensor& x);
torch::Tensor avg_pool2x(const torch::Tensor& x);

}  // namespace tweedie
