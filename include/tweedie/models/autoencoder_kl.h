// AutoencoderKL, the first stage of latent diffusion (Rombach et al. 2022;
// CompVis ldm/models/autoencoder.py and ldm/modules/diffusionmodules/model.py),
// with the LDM checkpoint names so that "first_stage_model.*" tensors load by
// name:
//   encoder.conv_in, encoder.down.<i>.block.<j>.{norm1,conv1,norm2,conv2,nin_shortcut},
//   encoder.down.<i>.downsample.conv (zero pad right/bottom by 1, 3x3 stride 2),
//   encoder.mid.{block_1,attn_1,block_2} (attn_1: norm, q, k, v, proj_out as
//   1x1 convs; one head over the H*W positions, scale 1/sqrt(C)),
//   encoder.norm_out, encoder.conv_out (2 z_channels: mean and log-variance),
//   quant_conv, post_quant_conv, decoder.conv_in, decoder.mid.*,
//   decoder.up.<i>.block.<j> (num_res_blocks + 1 per level),
//   decoder.up.<i>.upsample.conv (nearest x2, 3x3), decoder.norm_out, decoder.conv_out.
// Every GroupNorm is 32 groups, eps 1e-6, computed in float32 (nn/norm.h);
// the nonlinearity is SiLU.
//
// Images are [N, 3, H, W] in [-1, 1]; latents are the RAW latents of the
// autoencoder: the diffusion model's latents are scaling_factor * these
// (SD 1.x/2.x 0.18215, SDXL 0.13025; the caller applies it).
//
// JSON config (every key optional; "preset": "sd" (default) or "sdxl", which
// only sets scaling_factor): in_channels (3), out_ch (3), ch (128), ch_mult
// ([1,2,4,4]), num_res_blocks (2), z_channels (4), embed_dim (4),
// use_quant_conv (true), norm_groups (32), scaling_factor. The released SD
// VAE is this default: 83,653,863 parameters.
//
// Tiled encode/decode process overlapping tiles one at a time and blend them
// with linear ramps across each overlap, ignoring a quarter of the overlap
// next to each tile edge (tiled_map); tiles differ from the whole-image
// result because GroupNorm statistics and the middle attention see one tile
// only, so tiles should be large (default 512 px).
// Verified in tests/test_sd_unet.cpp: key set against the LDM naming rules,
// shapes, the posterior sample, bf16 vs fp32, tiled_map exactness on local
// maps, tiled == untiled when one tile covers the image.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/types.h>

namespace tweedie {

struct AutoencoderKLConfig {
  int64_t in_channels = 3, out_ch = 3, ch = 128;
  std::vector<int64_t> ch_mult{1, 2, 4, 4};
  int64_t num_res_blocks = 2, z_channels = 4, embed_dim = 4;
  bool use_quant_conv = true;
  int64_t norm_groups = 32;
  double scaling_factor = 0.18215;

  static AutoencoderKLConfig from_json(const std::string& text);  // Error "autoencoder_kl config: ..."
  std::string to_json() const;
  void validate() const;
  int64_t downscale() const { return int64_t(1) << (ch_mult.size() - 1); }  // 8 for SD
};

// Apply fn (a map from a [N, C, h, w] crop to [N, C', h*num/den, w*num/den])
// to overlapping tiles of x of at most `tile` x `tile` input pixels, stepping
// by tile - overlap (the last tile along an axis ends at the border), and
// blend: across every overlap a tile shares with a neighbour its output is
// weighted 0 for the `margin` pixels nearest its own edge, then by a linear
// ramp up to 1 at `margin` from the far end of the overlap (1 elsewhere);
// the weighted sum is divided by the summed weights (the weights of two
// tiles sum to 1 across an overlap). Lengths in input pixels; overlap must
// exceed 2 * margin. A map whose output pixel depends only on input pixels
// within `margin` of it (a local network with that receptive-field radius,
// zero padding at the image border) is reproduced exactly. Output float32
// (float64 when fn gives float64).
torch::Tensor tiled_map(const torch::Tensor& x, const std::function<torch::Tensor(const torch::Tensor&)>& fn,
                        int64_t tile, int64_t overlap, int64_t margin = 0, int64_t num = 1, int64_t den = 1);

class VaeEncoderImpl;  // "encoder" (src/models/autoencoder_kl.cpp)
class VaeDecoderImpl;  // "decoder"

// The encoder's diagonal Gaussian q(z|x) (LDM's DiagonalGaussianDistribution).
struct LatentPosterior {
  torch::Tensor mean, logvar;  // [N, embed_dim, h, w]; logvar clamped to [-30, 20]
  torch::Tensor sample(torch::Generator gen) const;  // mean + exp(logvar/2) * eps
  torch::Tensor kl() const;                           // KL(q || N(0, I)) summed per image: [N]
};

class AutoencoderKLImpl : public torch::nn::Module {
 public:
  explicit AutoencoderKLImpl(const AutoencoderKLConfig& c = {});
  const AutoencoderKLConfig& config() const { return cfg_; }
  double scaling_factor() const { return cfg_.scaling_factor; }

  // Posterior moments [N, 2*embed_dim, H/8, W/8]: mean then log-variance.
  torch::Tensor encode_moments(const torch::Tensor& x);
  LatentPosterior posterior(const torch::Tensor& x);
  // The posterior mean, or a sample mean + exp(logvar/2) * eps (logvar
  // clamped to [-30, 20]) drawn from gen when given.
  torch::Tensor encode(const torch::Tensor& x, std::optional<torch::Generator> gen = std::nullopt);
  torch::Tensor decode(const torch::Tensor& z);  // raw latents -> image (unclamped)

  // Tiled versions (tile/overlap in image pixels for encode, latent pixels
  // for decode; multiples of downscale() for encode). encode_tiled returns
  // the posterior mean.
  torch::Tensor encode_tiled(const torch::Tensor& x, int64_t tile = 512, int64_t overlap = 128);
  torch::Tensor decode_tiled(const torch::Tensor& z, int64_t tile = 64, int64_t overlap = 16);

  std::shared_ptr<VaeEncoderImpl> encoder;
  std::shared_ptr<VaeDecoderImpl> decoder;
  torch::nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};

 private:
  AutoencoderKLConfig cfg_;
};
TORCH_MODULE(AutoencoderKL);

}  // namespace tweedie
