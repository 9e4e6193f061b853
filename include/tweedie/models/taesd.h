// TAESD, the tiny autoencoder for Stable Diffusion latents (Ollin Boer
// Bohan, madebyollin/taesd taesd.py; diffusers AutoencoderTiny): a drop-in,
// much cheaper replacement of AutoencoderKL for previews and fast decoding.
//
//   Block(n): relu(conv3x3 -> relu -> conv3x3 -> relu -> conv3x3 (x) + x)
//   Encoder (nn.Sequential, image [0, 1] -> latents):
//     0 conv(3,64), 1 Block, 2 conv stride 2 (no bias), 3-5 Block,
//     6 conv s2, 7-9 Block, 10 conv s2, 11-13 Block, 14 conv(64, latent)
//   Decoder (latents -> image [0, 1] before clamping):
//     0 Clamp: 3 tanh(z / 3), 1 conv(latent, 64), 2 ReLU, 3-5 Block,
//     6 Upsample x2 (nearest), 7 conv (no bias), 8-10 Block, 11 Up, 12 conv,
//     13-15 Block, 16 Up, 17 conv, 18 Block, 19 conv(64, 3)
// Parameter names are those Sequential indices, as in taesd_encoder.pth /
// taesd_decoder.pth ("1.conv.0.weight", "2.weight", "14.bias", ...); the
// module Taesd holds them under "encoder." and "decoder.".
//
// TAESD's latents are the diffusion model's latents directly (those of
// AutoencoderKL times its scaling factor), so scaling_factor() is 1. This
// interface takes and gives images in [-1, 1] like AutoencoderKL (diffusers
// AutoencoderTiny does the same conversion); the [0, 1] <-> [-1, 1] maps and
// the decoder's clamp are the only differences to the raw modules. The
// latent <-> [0, 1] byte packing of taesd.py is scale_latents/unscale_latents.
// Verified in tests/test_sd_unet.cpp: the key set against taesd.py's
// Sequential indices, shapes, tiled decode equals untiled (the network is
// local: no normalization, no attention).
#pragma once
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/types.h>

#include "tweedie/nn/resample.h"

namespace tweedie {

// One taesd.py nn.Sequential: its layers in order (convolutions and Blocks
// registered under their indices; ReLU, Clamp and Upsample hold no weights).
class TaesdStackImpl : public torch::nn::Module {
 public:
  enum class Kind { Encoder, Decoder };
  // width: the 64 channels of taesd.py (smaller only for tests).
  TaesdStackImpl(Kind kind, int64_t latent_channels = 4, int64_t width = 64);
  torch::Tensor forward(const torch::Tensor& x);  // raw taesd.py semantics ([0, 1] images)

 private:
  struct Layer {
    enum Op { Conv, Block, Relu, Clamp, Up } op;
    torch::nn::Conv2d conv{nullptr};                 // Conv
    torch::nn::Conv2d c0{nullptr}, c2{nullptr}, c4{nullptr};  // Block: conv.0, conv.2, conv.4
    SubpixelKernels subpixel;  // Up followed by a 3x3 conv: the two as one sub-pixel conv (resample.h)
  };
  std::vector<Layer> layers_;
};
TORCH_MODULE(TaesdStack);

class TaesdImpl : public torch::nn::Module {
 public:
  explicit TaesdImpl(int64_t latent_channels = 4, int64_t width = 64);
  double scaling_factor() const { return 1.0; }
  int64_t downscale() const { return 8; }
  torch::Tensor encode(const torch::Tensor& x);  // image [-1, 1] -> latents
  torch::Tensor decode(const torch::Tensor& z);  // latents -> image [-1, 1] (clamped)
  // Tiled decode (tile/overlap in latent pixels) with tiled_map's margin set
  // to 19 latent pixels, above the decoder's receptive-field radius (18.125:
  // 10 3x3 convolutions at each of the latent, 2x and 4x resolutions and 5
  // at 8x), so the result equals decode() exactly; overlap must exceed 38.
  torch::Tensor decode_tiled(const torch::Tensor& z, int64_t tile = 96, int64_t overlap = 40);
  static constexpr int64_t kDecoderRadius = 19;

  TaesdStack encoder{nullptr}, decoder{nullptr};

 private:
  int64_t latent_channels_;
};
TORCH_MODULE(Taesd);

// taesd.py's byte packing: latents -> [0, 1] (z / 6 + 0.5, clamped), and back.
torch::Tensor taesd_scale_latents(const torch::Tensor& z);
torch::Tensor taesd_unscale_latents(const torch::Tensor& x);

}  // namespace tweedie
