// Downsample / Upsample of the ADM UNet (see include/tweedie/nn/resample.h).
// Verified in tests/test_networks.cpp (UNet shapes at 28x28 and 32x32).
#include "tweedie/nn/resample.h"

#include "tweedie/core/error.h"

namespace tweedie {

torch::Tensor upsample_nearest2x(const torch::Tensor& x) {
  return torch::upsample_nearest2d(x, std::vector<int64_t>{x.size(2) * 2, x.size(3) * 2});
}

torch::Tensor avg_pool2x(const torch::Tensor& x) { return torch::avg_pool2d(x, {2, 2}, {2, 2}); }

DownsampleImpl::DownsampleImpl(int64_t channels, int64_t out_channels, bool use_conv) {
  namespace nn = torch::nn;
  if (use_conv)
    op = register_module("op", nn::Conv2d(nn::Conv2dOptions(channels, out_channels, 3).stride(2).padding(1)));
  else
    check(channels == out_channels, "Downsample: average pooling cannot change ", channels, " channels to ",
          out_channels);
}

torch::Tensor DownsampleImpl::forward(const torch::Tensor& x) { return op ? op->forward(x) : avg_pool2x(x); }

UpsampleImpl::UpsampleImpl(int64_t channels, int64_t out_channels, bool use_conv) {
  namespace nn = torch::nn;
  if (use_conv)
    conv = register_module("conv", nn::Conv2d(nn::Conv2dOptions(channels, out_channels, 3).padding(1)));
  else
    check(channels == out_channels, "Upsample: nearest upsampling cannot change ", channels, " channels to ",
          out_channels);
}

torch::Tensor UpsampleImpl::forward(const torch::Tensor& x) {
  auto h = upsample_nearest2x(x);
  return conv ? conv->forward(h) : h;
}

}  // namespace tweedie
