// TAESD encoder/decoder with taesd.py's Sequential names (see
// include/tweedie/models/taesd.h). Verified in tests/test_sd_unet.cpp (key
// set, shapes, tiled decode equals untiled).
#include "tweedie/models/taesd.h"

#include "../nn/inplace.h"
#include "tweedie/core/error.h"
#include "tweedie/models/autoencoder_kl.h"
#include "tweedie/nn/resample.h"

namespace tweedie {

namespace nn = torch::nn;

namespace {
nn::Conv2d conv3(int64_t in, int64_t out, int64_t stride = 1, bool bias = true) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(bias));
}
}  // namespace

TaesdStackImpl::TaesdStackImpl(Kind kind, int64_t latent_channels, int64_t width) {
  check(latent_channels >= 1 && width >= 1, "taesd: latent_channels and width must be >= 1");
  const int64_t w = width;
  auto add_conv = [&](int64_t in, int64_t out, int64_t stride = 1, bool bias = true) {
    Layer l{Layer::Conv};
    l.conv = register_module(std::to_string(layers_.size()), conv3(in, out, stride, bias));
    layers_.push_back(l);
  };
  auto add_block = [&] {
    Layer l{Layer::Block};
    auto b = register_module(std::to_string(layers_.size()), std::make_shared<nn::Module>());
    auto c = b->register_module("conv", std::make_shared<nn::Module>());
    l.c0 = c->register_module("0", conv3(w, w));
    l.c2 = c->register_module("2", conv3(w, w));
    l.c4 = c->register_module("4", conv3(w, w));
    layers_.push_back(l);
  };
  auto add = [&](Layer::Op op) { layers_.push_back(Layer{op}); };
  if (kind == Kind::Encoder) {
    add_conv(3, w);
    add_block();
    for (int i = 0; i < 3; ++i) {
      add_conv(w, w, 2, false);
      add_block(), add_block(), add_block();
    }
    add_conv(w, latent_channels);
  } else {
    add(Layer::Clamp);
    add_conv(latent_channels, w);
    add(Layer::Relu);
    for (int i = 0; i < 3; ++i) {
      add_block(), add_block(), add_block();
      add(Layer::Up);
      add_conv(w, w, 1, false);
    }
    add_block();
    add_conv(w, 3);
  }
}

torch::Tensor TaesdStackImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& l = layers_[i];
    switch (l.op) {
      case Layer::Conv: h = l.conv->forward(h); break;
      case Layer::Block: {
        auto r = l.c4->forward(l.c2->forward(l.c0->forward(h).relu_()).relu_());
        h = detail::add_owned(r, h).relu_();  // the skip is the identity (n_in == n_out)
        break;
      }
      case Layer::Relu: h = detail::can_inplace() ? torch::relu_(h) : torch::relu(h); break;
      case Layer::Clamp: h = torch::tanh(h / 3) * 3; break;
      case Layer::Up:
        if (i + 1 < layers_.size() && layers_[i + 1].op == Layer::Conv && layers_[i + 1].conv->weight.size(2) == 3 &&
            layers_[i + 1].conv->options.stride()->at(0) == 1) {
          const auto& next = layers_[++i].conv;  // padding 1, as every TAESD conv
          h = upsample_conv3x3(h, next->weight, next->bias, &l.subpixel);
        } else {
          h = upsample_nearest2x(h);
        }
        break;
    }
  }
  return h;
}

TaesdImpl::TaesdImpl(int64_t latent_channels, int64_t width) : latent_channels_(latent_channels) {
  encoder = register_module("encoder", TaesdStack(TaesdStackImpl::Kind::Encoder, latent_channels, width));
  decoder = register_module("decoder", TaesdStack(TaesdStackImpl::Kind::Decoder, latent_channels, width));
  eval();
}

namespace {
torch::Tensor prepare(const torch::Tensor& x, const torch::Tensor& like) {
  auto h = x.to(like.scalar_type());
  const bool reduced = like.scalar_type() == torch::kBFloat16 || like.scalar_type() == torch::kHalf;
  return reduced ? h.contiguous(torch::MemoryFormat::ChannelsLast) : h.contiguous();
}
}  // namespace

torch::Tensor TaesdImpl::encode(const torch::Tensor& x) {
  check(x.dim() == 4 && x.size(1) == 3 && x.size(2) % 8 == 0 && x.size(3) % 8 == 0, "taesd: image of shape ",
        x.sizes(), " is not [N, 3, H, W] with H and W multiples of 8");
  auto p = encoder->parameters().front();
  return encoder->forward(prepare((x + 1) * 0.5, p)).to(x.scalar_type()).contiguous();
}

torch::Tensor TaesdImpl::decode(const torch::Tensor& z) {
  check(z.dim() == 4 && z.size(1) == latent_channels_, "taesd: latents of shape ", z.sizes(), " are not [N, ",
        latent_channels_, ", h, w]");
  auto p = decoder->parameters().front();
  auto y = decoder->forward(prepare(z, p)).to(z.scalar_type());
  return y.clamp(0, 1).mul(2).sub(1).contiguous();
}

torch::Tensor TaesdImpl::decode_tiled(const torch::Tensor& z, int64_t tile, int64_t overlap) {
  auto dec = [&](const torch::Tensor& t) { return decode(t); };
  return tiled_map(z, dec, tile, overlap, kDecoderRadius, 8, 1).to(z.scalar_type());
}

torch::Tensor taesd_scale_latents(const torch::Tensor& z) { return z.div(6).add(0.5).clamp(0, 1); }
torch::Tensor taesd_unscale_latents(const torch::Tensor& x) { return x.sub(0.5).mul(6); }

}  // namespace tweedie
