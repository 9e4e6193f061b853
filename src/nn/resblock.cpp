// ADM residual block (see include/tweedie/nn/resblock.h for the equations).
// Verified in tests/test_networks.cpp (UNet shapes, gradients, bf16).
#include "tweedie/nn/resblock.h"

#include "inplace.h"
#include "tweedie/core/error.h"
#include "tweedie/nn/modulation.h"
#include "tweedie/nn/resample.h"

namespace tweedie {

ResBlockImpl::ResBlockImpl(const ResBlockOptions& o, const std::string& site)
    : o_(o), site_out_(site.empty() ? "" : site + ".out") {
  namespace nn = torch::nn;
  in_norm = GroupNorm32(o.groups, o.in_channels);
  in_conv = nn::Conv2d(nn::Conv2dOptions(o.in_channels, o.out_channels, 3).padding(1));
  emb_proj = nn::Linear(o.emb_dim, (o.scale_shift ? 2 : 1) * o.out_channels);
  out_norm = GroupNorm32(o.groups, o.out_channels);
  dropout = nn::Dropout(o.dropout);
  out_conv = nn::Conv2d(nn::Conv2dOptions(o.out_channels, o.out_channels, 3).padding(1));
  if (o.in_channels != o.out_channels) skip = nn::Conv2d(nn::Conv2dOptions(o.in_channels, o.out_channels, 1));
  if (o.ldm_names) {
    // Holders named as LDM's nn.Sequential children (parameter-free layers keep their index).
    auto in_layers = register_module("in_layers", std::make_shared<torch::nn::Module>());
    in_layers->register_module("0", in_norm);
    in_layers->register_module("2", in_conv);
    register_module("emb_layers", std::make_shared<torch::nn::Module>())->register_module("1", emb_proj);
    auto out_layers = register_module("out_layers", std::make_shared<torch::nn::Module>());
    out_layers->register_module("0", out_norm);
    out_layers->register_module("2", dropout);
    out_layers->register_module("3", out_conv);
    if (skip) register_module("skip_connection", skip);
  } else {
    register_module("in_norm", in_norm);
    register_module("in_conv", in_conv);
    register_module("emb_proj", emb_proj);
    register_module("out_norm", out_norm);
    register_module("dropout", dropout);
    register_module("out_conv", out_conv);
    if (skip) register_module("skip", skip);
  }
  torch::NoGradGuard g;
  out_conv->weight.zero_();
  out_conv->bias.zero_();
}

torch::Tensor ResBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& emb, const Hooks* hooks) {
  auto h = in_norm->forward_silu(x);
  torch::Tensor xs = x;
  if (o_.resample == Resample::Up) {
    h = upsample_nearest2x(h);
    xs = upsample_nearest2x(x);
  } else if (o_.resample == Resample::Down) {
    h = avg_pool2x(h);
    xs = avg_pool2x(x);
  }
  h = in_conv->forward(h);
  auto e = emb_proj->forward(torch::silu(emb));  // [N, C_out or 2 C_out]
  if (o_.scale_shift) {
    auto ss = e.chunk(2, 1);
    h = detail::silu_owned(ada_group_norm(out_norm, h, ss[0], ss[1]));
  } else {
    h = out_norm->forward_silu(detail::add_owned(h, e.view({e.size(0), e.size(1), 1, 1}).expand_as(h)));
  }
  if (o_.dropout > 0) h = dropout->forward(h);
  h = out_conv->forward(h);
  h = detail::add_owned(h, skip ? skip->forward(xs) : xs);
  return hooks && !site_out_.empty() ? hooks->apply(site_out_, h) : h;
}

}  // namespace tweedie
