// AutoencoderKL of latent diffusion with the LDM checkpoint names, and the
// tile-and-blend helper (see include/tweedie/models/autoencoder_kl.h).
// Verified in tests/test_sd_unet.cpp (key set, shapes, posterior sample,
// bf16 vs fp32, tiled_map exactness, tiled == untiled for one tile).
#include "tweedie/models/autoencoder_kl.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>
#include <torch/nn/modules/container/modulelist.h>

#include "../core/config_reader.h"
#include "../nn/inplace.h"
#include "tweedie/core/error.h"
#include "tweedie/nn/attention.h"
#include "tweedie/nn/norm.h"
#include "tweedie/nn/resample.h"

namespace tweedie {

namespace nn = torch::nn;

// ---------------------------------------------------------------- config

AutoencoderKLConfig AutoencoderKLConfig::from_json(const std::string& text) {
  detail::ConfigReader r("autoencoder_kl", text);
  AutoencoderKLConfig c;
  const std::string preset = r.string("preset", "sd");
  if (preset == "sdxl")
    c.scaling_factor = 0.13025;
  else if (preset != "sd")
    r.bad("preset", "must be \"sd\" or \"sdxl\"");
  c.in_channels = r.integer("in_channels", c.in_channels, 1);
  c.out_ch = r.integer("out_ch", c.out_ch, 1);
  c.ch = r.integer("ch", c.ch, 1);
  c.ch_mult = r.int_list("ch_mult", c.ch_mult, 1);
  c.num_res_blocks = r.integer("num_res_blocks", c.num_res_blocks, 1);
  c.z_channels = r.integer("z_channels", c.z_channels, 1);
  c.embed_dim = r.integer("embed_dim", c.embed_dim, 1);
  c.use_quant_conv = r.boolean("use_quant_conv", c.use_quant_conv);
  c.norm_groups = r.integer("norm_groups", c.norm_groups, 1);
  c.scaling_factor = r.positive("scaling_factor", c.scaling_factor);
  r.finish();
  c.validate();
  return c;
}

std::string AutoencoderKLConfig::to_json() const {
  nlohmann::ordered_json j;
  j["in_channels"] = in_channels;
  j["out_ch"] = out_ch;
  j["ch"] = ch;
  j["ch_mult"] = ch_mult;
  j["num_res_blocks"] = num_res_blocks;
  j["z_channels"] = z_channels;
  j["embed_dim"] = embed_dim;
  j["use_quant_conv"] = use_quant_conv;
  j["norm_groups"] = norm_groups;
  j["scaling_factor"] = scaling_factor;
  return j.dump();
}

void AutoencoderKLConfig::validate() const {
  auto bad = [](const char* key, const std::string& v, const std::string& why) {
    fail("autoencoder_kl config: '", key, "' = ", v, ": ", why);
  };
  if (ch_mult.empty() || ch_mult.size() > 8) bad("ch_mult", detail::list_str(ch_mult), "must list 1 to 8 levels");
  for (auto m : ch_mult)
    if (m < 1 || (ch * m) % norm_groups)
      bad("ch_mult", detail::list_str(ch_mult),
          "every ch * m must be a positive multiple of norm_groups = " + std::to_string(norm_groups));
  if (ch % norm_groups) bad("ch", std::to_string(ch), "must be a multiple of norm_groups");
  if (!use_quant_conv && embed_dim != z_channels)
    bad("embed_dim", std::to_string(embed_dim), "must equal z_channels without quant_conv");
  if (!(scaling_factor > 0 && std::isfinite(scaling_factor)))
    bad("scaling_factor", std::to_string(scaling_factor), "must be a positive number");
}

// ---------------------------------------------------------------- layers

namespace {

constexpr double kEps = 1e-6;

nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(k == 3 && stride == 1 ? 1 : 0));
}

// LDM model.py ResnetBlock without time embedding.
class VaeResBlockImpl : public nn::Module {
 public:
  VaeResBlockImpl(int64_t in, int64_t out, int64_t groups) {
    norm1 = register_module("norm1", GroupNorm32(groups, in, kEps));
    conv1 = register_module("conv1", conv(in, out, 3));
    norm2 = register_module("norm2", GroupNorm32(groups, out, kEps));
    conv2 = register_module("conv2", conv(out, out, 3));
    if (in != out) nin_shortcut = register_module("nin_shortcut", conv(in, out, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = conv1->forward(norm1->forward_silu(x));
    h = conv2->forward(norm2->forward_silu(h));
    return detail::add_owned(h, nin_shortcut ? nin_shortcut->forward(x) : x);
  }
  GroupNorm32 norm1{nullptr}, norm2{nullptr};
  nn::Conv2d conv1{nullptr}, conv2{nullptr}, nin_shortcut{nullptr};
};
TORCH_MODULE(VaeResBlock);

// LDM model.py AttnBlock: single-head self-attention over the positions.
class VaeAttnBlockImpl : public nn::Module {
 public:
  VaeAttnBlockImpl(int64_t c, int64_t groups) {
    norm = register_module("norm", GroupNorm32(groups, c, kEps));
    q = register_module("q", conv(c, c, 1));
    k = register_module("k", conv(c, c, 1));
    v = register_module("v", conv(c, c, 1));
    proj_out = register_module("proj_out", conv(c, c, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    auto h = norm->forward(x);
    auto tokens = [&](const torch::Tensor& t) { return t.permute({0, 2, 3, 1}).reshape({B, H * W, C}); };
    auto o = scaled_dot_product_attention(tokens(q->forward(h)), tokens(k->forward(h)), tokens(v->forward(h)),
                                          1.0 / std::sqrt(double(C)));
    return detail::add_owned(proj_out->forward(o.view({B, H, W, C}).permute({0, 3, 1, 2})), x);
  }
  GroupNorm32 norm{nullptr};
  nn::Conv2d q{nullptr}, k{nullptr}, v{nullptr}, proj_out{nullptr};
};
TORCH_MODULE(VaeAttnBlock);

// "mid": block_1, attn_1, block_2.
class VaeMidImpl : public nn::Module {
 public:
  VaeMidImpl(int64_t c, int64_t groups) {
    block_1 = register_module("block_1", VaeResBlock(c, c, groups));
    attn_1 = register_module("attn_1", VaeAttnBlock(c, groups));
    block_2 = register_module("block_2", VaeResBlock(c, c, groups));
  }
  torch::Tensor forward(const torch::Tensor& x) { return block_2->forward(attn_1->forward(block_1->forward(x))); }
  VaeResBlock block_1{nullptr}, block_2{nullptr};
  VaeAttnBlock attn_1{nullptr};
};
TORCH_MODULE(VaeMid);

// One level "down.<i>" / "up.<i>": block.<j>, and downsample.conv / upsample.conv.
class VaeLevelImpl : public nn::Module {
 public:
  VaeLevelImpl() { list = register_module("block", nn::ModuleList()); }
  void add_block(int64_t in, int64_t out, int64_t groups) {
    blocks.push_back(VaeResBlock(in, out, groups));
    list->push_back(blocks.back());
  }
  nn::ModuleList list{nullptr};
  std::vector<VaeResBlock> blocks;
  nn::Conv2d down{nullptr};
  Upsample up{nullptr};  // "upsample.conv": nearest x2 then a 3x3 conv (sub-pixel in inference)
};
TORCH_MODULE(VaeLevel);

}  // namespace

class VaeEncoderImpl : public nn::Module {
 public:
  explicit VaeEncoderImpl(const AutoencoderKLConfig& c) {
    const int64_t G = c.norm_groups, L = c.ch_mult.size();
    conv_in = register_module("conv_in", conv(c.in_channels, c.ch, 3));
    auto down = register_module("down", nn::ModuleList());
    int64_t ch = c.ch;
    for (int64_t l = 0; l < L; ++l) {
      VaeLevel lv;
      for (int64_t j = 0; j < c.num_res_blocks; ++j) {
        lv->add_block(ch, c.ch * c.ch_mult[l], G);
        ch = c.ch * c.ch_mult[l];
      }
      if (l + 1 < L)
        lv->down = lv->register_module("downsample", std::make_shared<nn::Module>())
                       ->register_module("conv", conv(ch, ch, 3, 2));
      levels.push_back(lv);
      down->push_back(lv);
    }
    mid = register_module("mid", VaeMid(ch, G));
    norm_out = register_module("norm_out", GroupNorm32(G, ch, kEps));
    conv_out = register_module("conv_out", conv(ch, 2 * c.z_channels, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = conv_in->forward(x);
    for (auto& lv : levels) {
      for (auto& b : lv->blocks) h = b->forward(h);
      if (lv->down) h = lv->down->forward(torch::constant_pad_nd(h, {0, 1, 0, 1}, 0));  // asymmetric pad
    }
    h = mid->forward(h);
    return conv_out->forward(norm_out->forward_silu(h));
  }
  nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  std::vector<VaeLevel> levels;
  VaeMid mid{nullptr};
  GroupNorm32 norm_out{nullptr};
};

class VaeDecoderImpl : public nn::Module {
 public:
  explicit VaeDecoderImpl(const AutoencoderKLConfig& c) {
    const int64_t G = c.norm_groups, L = c.ch_mult.size();
    int64_t ch = c.ch * c.ch_mult.back();
    conv_in = register_module("conv_in", conv(c.z_channels, ch, 3));
    mid = register_module("mid", VaeMid(ch, G));
    levels.resize(L, VaeLevel(nullptr));
    for (int64_t l = L - 1; l >= 0; --l) {  // built deepest first, numbered by level
      VaeLevel lv;
      for (int64_t j = 0; j <= c.num_res_blocks; ++j) {
        lv->add_block(ch, c.ch * c.ch_mult[l], G);
        ch = c.ch * c.ch_mult[l];
      }
      if (l > 0)
        lv->up = lv->register_module("upsample", Upsample(ch, ch, true));
      levels[l] = lv;
    }
    auto up = register_module("up", nn::ModuleList());
    for (auto& lv : levels) up->push_back(lv);
    norm_out = register_module("norm_out", GroupNorm32(G, ch, kEps));
    conv_out = register_module("conv_out", conv(ch, c.out_ch, 3));
  }
  torch::Tensor forward(const torch::Tensor& z) {
    auto h = mid->forward(conv_in->forward(z));
    for (int64_t l = int64_t(levels.size()) - 1; l >= 0; --l) {
      for (auto& b : levels[l]->blocks) h = b->forward(h);
      if (levels[l]->up) h = levels[l]->up->forward(h);
    }
    return conv_out->forward(norm_out->forward_silu(h));
  }
  nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  std::vector<VaeLevel> levels;
  VaeMid mid{nullptr};
  GroupNorm32 norm_out{nullptr};
};

// ---------------------------------------------------------------- autoencoder

namespace {
// Input in the weights' dtype; channels_last under bf16 (oneDNN's bf16 convolutions).
torch::Tensor prepare(const torch::Tensor& x, torch::ScalarType dtype) {
  auto h = x.to(dtype);
  const bool reduced = dtype == torch::kBFloat16 || dtype == torch::kHalf;
  return reduced ? h.contiguous(torch::MemoryFormat::ChannelsLast) : h.contiguous();
}
}  // namespace

AutoencoderKLImpl::AutoencoderKLImpl(const AutoencoderKLConfig& c) : cfg_(c) {
  c.validate();
  encoder = register_module("encoder", std::make_shared<VaeEncoderImpl>(c));
  decoder = register_module("decoder", std::make_shared<VaeDecoderImpl>(c));
  if (c.use_quant_conv) {
    quant_conv = register_module("quant_conv", conv(2 * c.z_channels, 2 * c.embed_dim, 1));
    post_quant_conv = register_module("post_quant_conv", conv(c.embed_dim, c.z_channels, 1));
  }
  eval();
}

torch::Tensor AutoencoderKLImpl::encode_moments(const torch::Tensor& x) {
  const int64_t f = cfg_.downscale();
  check(x.dim() == 4 && x.size(1) == cfg_.in_channels && x.size(2) % f == 0 && x.size(3) % f == 0,
        "autoencoder_kl: image of shape ", x.sizes(), " is not [N, ", cfg_.in_channels,
        ", H, W] with H and W multiples of ", f);
  auto h = encoder->forward(prepare(x, encoder->conv_in->weight.scalar_type()));
  if (quant_conv) h = quant_conv->forward(h);
  return h.to(x.scalar_type()).contiguous();
}

torch::Tensor LatentPosterior::sample(torch::Generator gen) const {
  return mean + logvar.mul(0.5).exp() * torch::randn(mean.sizes(), gen, mean.options());
}

torch::Tensor LatentPosterior::kl() const { return 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum({1, 2, 3}); }

LatentPosterior AutoencoderKLImpl::posterior(const torch::Tensor& x) {
  auto m = encode_moments(x).chunk(2, 1);
  return {m[0], m[1].clamp(-30, 20)};
}

torch::Tensor AutoencoderKLImpl::encode(const torch::Tensor& x, std::optional<torch::Generator> gen) {
  auto p = posterior(x);
  return gen ? p.sample(*gen) : p.mean.contiguous();
}

torch::Tensor AutoencoderKLImpl::decode(const torch::Tensor& z) {
  check(z.dim() == 4 && z.size(1) == cfg_.embed_dim, "autoencoder_kl: latents of shape ", z.sizes(),
        " are not [N, ", cfg_.embed_dim, ", h, w]");
  auto h = prepare(z, decoder->conv_in->weight.scalar_type());
  if (post_quant_conv) h = post_quant_conv->forward(h);
  return decoder->forward(h).to(z.scalar_type()).contiguous();
}

torch::Tensor AutoencoderKLImpl::encode_tiled(const torch::Tensor& x, int64_t tile, int64_t overlap) {
  const int64_t f = cfg_.downscale();
  check(tile % f == 0 && overlap % f == 0, "autoencoder_kl: encode tile ", tile, " and overlap ", overlap,
        " must be multiples of ", f);
  auto mean = [&](const torch::Tensor& t) { return encode(t); };
  return tiled_map(x, mean, tile, overlap, overlap / 4 / f * f, 1, f).to(x.scalar_type());
}

torch::Tensor AutoencoderKLImpl::decode_tiled(const torch::Tensor& z, int64_t tile, int64_t overlap) {
  auto dec = [&](const torch::Tensor& t) { return decode(t); };
  return tiled_map(z, dec, tile, overlap, overlap / 4, cfg_.downscale(), 1).to(z.scalar_type());
}

// ---------------------------------------------------------------- tiling

namespace {

// Tile starts along an axis of length n: 0, s, 2s, ... and a last tile ending at n.
std::vector<int64_t> tile_starts(int64_t n, int64_t tile, int64_t stride) {
  std::vector<int64_t> v{0};
  while (v.back() + tile < n) v.push_back(std::min(v.back() + stride, n - tile));
  return v;
}

// Output-space weights of tile k along an axis: over the overlap of length
// ov with a neighbour, 0 for the m pixels at this tile's edge, then a linear
// ramp (p + 0.5 - m) / (ov - 2m) clamped to [0, 1] (p counted from the edge).
torch::Tensor axis_weight(const std::vector<int64_t>& starts, size_t k, int64_t tile, int64_t m, int64_t num,
                          int64_t den) {
  const int64_t len = tile * num / den;
  std::vector<float> w(len, 1.0f);
  auto ramp = [&](int64_t ov, auto index) {
    for (int64_t p = 0; p < ov && p < len; ++p) w[index(p)] *= float(std::clamp((p + 0.5 - m) / double(ov - 2 * m), 0.0, 1.0));
  };
  if (k > 0) ramp((starts[k - 1] + tile - starts[k]) * num / den, [](int64_t p) { return p; });
  if (k + 1 < starts.size()) ramp((starts[k] + tile - starts[k + 1]) * num / den, [&](int64_t p) { return len - 1 - p; });
  return torch::tensor(w);
}

}  // namespace

torch::Tensor tiled_map(const torch::Tensor& x, const std::function<torch::Tensor(const torch::Tensor&)>& fn,
                        int64_t tile, int64_t overlap, int64_t margin, int64_t num, int64_t den) {
  check(x.dim() == 4, "tiled_map: expected [N, C, H, W], got ", x.sizes());
  check(tile >= 1 && overlap >= 0 && overlap < tile && margin >= 0 && (margin == 0 || overlap > 2 * margin),
        "tiled_map: need 0 <= overlap < tile and overlap > 2 * margin, got tile ", tile, ", overlap ", overlap,
        ", margin ", margin);
  check(num >= 1 && den >= 1 && (tile * num) % den == 0 && (overlap * num) % den == 0,
        "tiled_map: tile ", tile, " and overlap ", overlap, " must map to whole output pixels (scale ", num, "/", den, ")");
  const int64_t H = x.size(2), W = x.size(3);
  const int64_t th = std::min(tile, H), tw = std::min(tile, W);
  check((H * num) % den == 0 && (W * num) % den == 0 && (th * num) % den == 0 && (tw * num) % den == 0,
        "tiled_map: size ", H, "x", W, " does not scale by ", num, "/", den, " to whole pixels");
  auto ys = tile_starts(H, th, tile - overlap), xs = tile_starts(W, tw, tile - overlap);
  const int64_t m = margin * num / den;
  for (auto& v : {&ys, &xs})
    for (auto s : *v) check((s * num) % den == 0, "tiled_map: a tile start ", s, " does not scale by ", num, "/", den);
  auto acc = [](const torch::Tensor& y) { return y.to(y.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32); };
  if (ys.size() == 1 && xs.size() == 1) return acc(fn(x));
  torch::Tensor out, wsum;
  for (size_t i = 0; i < ys.size(); ++i) {
    auto wy = axis_weight(ys, i, th, m, num, den).to(x.device());
    for (size_t j = 0; j < xs.size(); ++j) {
      auto y = acc(fn(x.narrow(2, ys[i], th).narrow(3, xs[j], tw)));
      check(y.dim() == 4 && y.size(2) == th * num / den && y.size(3) == tw * num / den,
            "tiled_map: the map gave ", y.sizes(), " for a ", th, "x", tw, " tile (scale ", num, "/", den, ")");
      if (!out.defined()) {
        out = torch::zeros({y.size(0), y.size(1), H * num / den, W * num / den}, y.options());
        wsum = torch::zeros({1, 1, H * num / den, W * num / den}, y.options());
      }
      auto w = (wy.view({1, 1, -1, 1}) * axis_weight(xs, j, tw, m, num, den).to(x.device()).view({1, 1, 1, -1})).to(y.scalar_type());
      const int64_t oy = ys[i] * num / den, ox = xs[j] * num / den;
      out.narrow(2, oy, y.size(2)).narrow(3, ox, y.size(3)).addcmul_(y, w);
      wsum.narrow(2, oy, y.size(2)).narrow(3, ox, y.size(3)).add_(w);
    }
  }
  check(wsum.min().item<float>() > 0, "tiled_map: tile ", tile, ", overlap ", overlap, " and margin ", margin,
        " leave pixels without weight");
  return out.div_(wsum);
}

}  // namespace tweedie
