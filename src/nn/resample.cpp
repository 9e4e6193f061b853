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

namespace {

// Taps of one phase along one axis: phase 0 reads offsets {-1, 0} -> [t0, t1 + t2],
// phase 1 reads {0, +1} -> [t0 + t1, t2]; `dim` is the kernel axis (2 rows, 3 columns).
torch::Tensor phase_taps(const torch::Tensor& w, int64_t dim, int phase) {
  auto t0 = w.select(dim, 0), t1 = w.select(dim, 1), t2 = w.select(dim, 2);
  return phase == 0 ? torch::stack({t0, t1 + t2}, dim) : torch::stack({t0 + t1, t2}, dim);
}

void refresh(SubpixelKernels& k, const torch::Tensor& weight, const torch::Tensor& bias) {
  k.bias = bias.defined() ? bias.repeat({4}) : torch::Tensor();  // cheap: Cout values
  if (k.weight.defined() && k.storage.is_alias_of(weight.storage()) && k.source == weight.data_ptr() &&
      k.version == int64_t(weight._version()) &&
      k.dtype == weight.scalar_type())
    return;
  const auto w = weight.to(at::promote_types(weight.scalar_type(), torch::kFloat32));  // sums in >= float32
  std::vector<torch::Tensor> phases;
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b) phases.push_back(phase_taps(phase_taps(w, 2, a), 3, b));
  k.weight = torch::cat(phases).to(weight.scalar_type()).contiguous(weight.suggest_memory_format());
  k.storage = weight.storage();
  k.source = weight.data_ptr();
  k.version = int64_t(weight._version());
  k.dtype = weight.scalar_type();
}

}  // namespace

torch::Tensor upsample_conv3x3(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                               SubpixelKernels* cache) {
  check(x.dim() == 4 && weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3 &&
            weight.size(1) == x.size(1),
        "upsample_conv3x3: needs x [N, C, H, W] and a 3x3 weight [Cout, C, 3, 3], got ", x.sizes(), " and ",
        weight.sizes());
  const bool grad = torch::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad() ||
                                                      (bias.defined() && bias.requires_grad()));
  if (!cache || grad) return torch::conv2d(upsample_nearest2x(x), weight, bias, 1, 1);
  torch::NoGradGuard no_grad;
  refresh(*cache, weight, bias);
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3), Co = weight.size(0);
  auto y = torch::conv2d(x, cache->weight, cache->bias, 1, 1);  // [N, 4 Co, H + 1, W + 1]
  const auto fmt = x.suggest_memory_format();
  auto out = torch::empty({N, Co, 2 * H, 2 * W}, y.options().memory_format(fmt));
  // out[n, c, 2i + a, 2j + b] = y[n, (2a + b) Co + c, i + a, j + b]
  auto o6 = out.view({N, Co, H, 2, W, 2});
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b)
      o6.select(5, b).select(3, a).copy_(y.slice(1, (2 * a + b) * Co, (2 * a + b + 1) * Co).slice(2, a, a + H).slice(3, b, b + W));
  return out;
}

torch::Tensor UpsampleImpl::forward(const torch::Tensor& x) {
  if (!conv) return upsample_nearest2x(x);
  if (conv->options.kernel_size()->at(0) == 3 && conv->options.kernel_size()->at(1) == 3)
    return upsample_conv3x3(x, conv->weight, conv->bias, &kernels_);
  return conv->forward(upsample_nearest2x(x));
}

}  // namespace tweedie
