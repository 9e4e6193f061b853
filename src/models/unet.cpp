// ADM UNet (Dhariwal & Nichol 2021; guided-diffusion unet.py): structure,
// config keys and hook sites are documented in include/tweedie/models/unet.h.
// Verified in tests/test_networks.cpp: output shapes at 28x28 and 32x32 with
// and without classes, finite output, null class vs class 0, hooks (skip,
// temb, attention), gradients reach every parameter, bf16 agrees with fp32,
// safetensors round trip, config errors.
#include "tweedie/models/unet.h"

#include <nlohmann/json.hpp>

#include "../nn/inplace.h"
#include "../core/config_reader.h"
#include "tweedie/core/error.h"
#include "tweedie/nn/attention.h"
#include "tweedie/nn/embedding.h"
#include "tweedie/nn/norm.h"
#include "tweedie/nn/resample.h"
#include "tweedie/nn/resblock.h"

namespace tweedie {

// ---------------------------------------------------------------- config

UNetConfig UNetConfig::from_json(const std::string& text) {
  detail::ConfigReader r("unet", text);
  UNetConfig c;
  c.in_channels = r.integer("in_channels", c.in_channels, 1);
  c.out_channels = r.integer("out_channels", c.in_channels, 1);
  r.image_size(c.height, c.width);
  c.model_channels = r.integer("model_channels", c.model_channels, 1);
  c.channel_mult = r.int_list("channel_mult", c.channel_mult, 1);
  if (c.channel_mult.empty()) r.bad("channel_mult", "must be a non-empty list of positive integers");
  c.num_res_blocks = r.integer("num_res_blocks", c.num_res_blocks, 1);
  c.attention_resolutions = r.int_list("attention_resolutions", c.attention_resolutions, 1);
  c.num_heads = r.integer("num_heads", c.num_heads, 1);
  c.head_channels = r.integer("head_channels", c.head_channels, 0);
  c.dropout = r.number("dropout", c.dropout);
  c.num_classes = r.integer("num_classes", c.num_classes, 0);
  c.use_scale_shift_norm = r.boolean("use_scale_shift_norm", c.use_scale_shift_norm);
  c.resblock_updown = r.boolean("resblock_updown", c.resblock_updown);
  c.conv_resample = r.boolean("conv_resample", c.conv_resample);
  c.norm_groups = r.integer("norm_groups", c.norm_groups, 1);
  c.time_embedding = r.string("time_embedding", c.time_embedding);
  c.time_scale = r.number("time_scale", c.time_scale);
  r.finish();
  c.validate();
  return c;
}

std::string UNetConfig::to_json() const {
  nlohmann::ordered_json j;
  j["in_channels"] = in_channels;
  j["out_channels"] = out_channels;
  j["height"] = height;
  j["width"] = width;
  j["model_channels"] = model_channels;
  j["channel_mult"] = channel_mult;
  j["num_res_blocks"] = num_res_blocks;
  j["attention_resolutions"] = attention_resolutions;
  j["num_heads"] = num_heads;
  j["head_channels"] = head_channels;
  j["dropout"] = dropout;
  j["num_classes"] = num_classes;
  j["use_scale_shift_norm"] = use_scale_shift_norm;
  j["resblock_updown"] = resblock_updown;
  j["conv_resample"] = conv_resample;
  j["norm_groups"] = norm_groups;
  j["time_embedding"] = time_embedding;
  j["time_scale"] = time_scale;
  return j.dump();
}

int64_t UNetConfig::heads_for(int64_t ch) const { return head_channels > 0 ? ch / head_channels : num_heads; }

void UNetConfig::validate() const {
  auto bad = [](const char* key, const auto& value, const std::string& why) {
    std::ostringstream o;
    o << value;
    fail("unet config: '", key, "' = ", o.str(), ": ", why);
  };
  using detail::list_str;
  for (auto [k, v] : {std::pair<const char*, int64_t>{"in_channels", in_channels}, {"out_channels", out_channels},
                      {"height", height}, {"width", width}, {"model_channels", model_channels},
                      {"num_res_blocks", num_res_blocks}, {"num_heads", num_heads}, {"norm_groups", norm_groups}})
    if (v < 1) bad(k, v, "must be >= 1");
  if (head_channels < 0) bad("head_channels", head_channels, "must be >= 0 (0 = use num_heads)");
  if (num_classes < 0) bad("num_classes", num_classes, "must be >= 0 (0 = unconditional)");
  if (channel_mult.empty()) bad("channel_mult", "[]", "must be a non-empty list of positive integers");
  for (auto m : channel_mult)
    if (m < 1) bad("channel_mult", list_str(channel_mult), "entries must be positive integers");
  if (!(dropout >= 0 && dropout < 1)) bad("dropout", dropout, "must be in [0, 1)");
  if (!(time_scale > 0 && std::isfinite(time_scale))) bad("time_scale", time_scale, "must be a positive number");
  if (time_embedding != "sinusoidal" && time_embedding != "fourier")
    bad("time_embedding", "\"" + time_embedding + "\"", "must be \"sinusoidal\" or \"fourier\"");
  if (time_embedding == "fourier" && model_channels % 2)
    bad("model_channels", model_channels, "must be even for Fourier time features");
  const int64_t levels = channel_mult.size();
  if (levels > 20) bad("channel_mult", list_str(channel_mult), "has too many levels");
  const int64_t f = int64_t(1) << (levels - 1);
  if (height % f) bad("height", height, "must be divisible by 2^(levels-1) = " + std::to_string(f) + " (channel_mult has " + std::to_string(levels) + " levels)");
  if (width % f) bad("width", width, "must be divisible by 2^(levels-1) = " + std::to_string(f) + " (channel_mult has " + std::to_string(levels) + " levels)");
  for (auto m : channel_mult)
    if ((model_channels * m) % norm_groups)
      bad("norm_groups", norm_groups, "does not divide the " + std::to_string(model_channels * m) + " channels of a level");
  std::vector<int64_t> attn_ch;  // channel counts that get attention (always the middle block)
  attn_ch.push_back(model_channels * channel_mult.back());
  for (auto a : attention_resolutions) {
    int64_t lvl = -1;
    for (int64_t l = 0; l < levels; ++l)
      if ((int64_t(1) << l) == a) lvl = l;
    if (lvl < 0)
      bad("attention_resolutions", list_str(attention_resolutions),
          "entries are downsampling factors 2^l of a level (1.." + std::to_string(f) + "), got " + std::to_string(a));
    attn_ch.push_back(model_channels * channel_mult[lvl]);
  }
  for (auto ch : attn_ch) {
    if (head_channels > 0 && ch % head_channels)
      bad("head_channels", head_channels, "does not divide the " + std::to_string(ch) + " channels of an attention layer");
    if (head_channels == 0 && ch % num_heads)
      bad("num_heads", num_heads, "does not divide the " + std::to_string(ch) + " channels of an attention layer");
  }
}

// ---------------------------------------------------------------- network

namespace {

// One resolution level of either half, or the middle.
class LevelImpl : public torch::nn::Module {
 public:
  void add_res(const ResBlockOptions& o, const std::string& path) {
    res.push_back(ResBlock(o, path + ".res." + std::to_string(res.size())));
    if (!res_list) res_list = register_module("res", torch::nn::ModuleList());
    res_list->push_back(res.back());
  }
  void add_attn(int64_t ch, int64_t heads, int64_t groups, const std::string& path) {
    attn.push_back(AttentionBlock2d(ch, heads, groups, path + ".attn." + std::to_string(attn.size())));
    if (!attn_list) attn_list = register_module("attn", torch::nn::ModuleList());
    attn_list->push_back(attn.back());
  }
  torch::nn::ModuleList res_list{nullptr}, attn_list{nullptr};
  std::vector<ResBlock> res;
  std::vector<AttentionBlock2d> attn;  // empty, or one per ResBlock (middle: one)
  Downsample down{nullptr};
  Upsample up{nullptr};
  ResBlock resample{nullptr};  // resblock_updown
};
TORCH_MODULE(Level);

class UNet : public Network {
 public:
  explicit UNet(const UNetConfig& c) : cfg_(c) {
    c.validate();
    const int64_t mc = c.model_channels, temb = 4 * mc, levels = c.channel_mult.size(), G = c.norm_groups;
    time_embed = register_module(
        "time_embed", TimestepEmbedder(mc, temb, time_embed_kind_from_string(c.time_embedding), c.time_scale));
    if (c.num_classes > 0) label_emb = register_module("label_emb", LabelEmbedder(c.num_classes, temb));
    int64_t ch = mc * c.channel_mult[0];
    conv_in = register_module("conv_in", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.in_channels, ch, 3).padding(1)));
    std::vector<int64_t> skip_ch{ch};
    auto has_attn = [&](int64_t l) {
      for (auto a : c.attention_resolutions)
        if (a == (int64_t(1) << l)) return true;
      return false;
    };
    auto ropts = [&](int64_t in, int64_t out, Resample rs = Resample::None) {
      ResBlockOptions o;
      o.in_channels = in, o.out_channels = out, o.emb_dim = temb, o.groups = G, o.dropout = c.dropout;
      o.scale_shift = c.use_scale_shift_norm, o.resample = rs;
      return o;
    };

    auto down_list = register_module("down", torch::nn::ModuleList());
    for (int64_t l = 0; l < levels; ++l) {
      const std::string p = "down." + std::to_string(l);
      Level lv;
      const int64_t out = mc * c.channel_mult[l];
      for (int64_t i = 0; i < c.num_res_blocks; ++i) {
        lv->add_res(ropts(ch, out), p);
        ch = out;
        if (has_attn(l)) lv->add_attn(ch, c.heads_for(ch), G, p);
        skip_ch.push_back(ch);
      }
      if (l + 1 < levels) {
        if (c.resblock_updown)
          lv->resample = lv->register_module("down", ResBlock(ropts(ch, ch, Resample::Down), p + ".down"));
        else
          lv->down = lv->register_module("down", Downsample(ch, ch, c.conv_resample));
        skip_ch.push_back(ch);
      }
      down_list->push_back(lv);
      down_.push_back(lv);
    }

    mid_ = register_module("mid", Level());
    mid_->add_res(ropts(ch, ch), "mid");
    mid_->add_attn(ch, c.heads_for(ch), G, "mid");
    mid_->add_res(ropts(ch, ch), "mid");

    up_.resize(levels, Level(nullptr));
    for (int64_t l = levels - 1; l >= 0; --l) {
      const std::string p = "up." + std::to_string(l);
      Level lv;
      const int64_t out = mc * c.channel_mult[l];
      for (int64_t i = 0; i <= c.num_res_blocks; ++i) {
        const int64_t ich = skip_ch.back();
        skip_ch.pop_back();
        lv->add_res(ropts(ch + ich, out), p);
        ch = out;
        if (has_attn(l)) lv->add_attn(ch, c.heads_for(ch), G, p);
      }
      if (l > 0) {
        if (c.resblock_updown)
          lv->resample = lv->register_module("up", ResBlock(ropts(ch, ch, Resample::Up), p + ".up"));
        else
          lv->up = lv->register_module("up", Upsample(ch, ch, c.conv_resample));
      }
      up_[l] = lv;
    }
    auto up_list = register_module("up", torch::nn::ModuleList());
    for (auto& lv : up_) up_list->push_back(lv);

    norm_out = register_module("norm_out", GroupNorm32(G, ch));
    conv_out = register_module("conv_out",
                               torch::nn::Conv2d(torch::nn::Conv2dOptions(ch, c.out_channels, 3).padding(1)));
    torch::NoGradGuard g;
    conv_out->weight.zero_();
    conv_out->bias.zero_();

    const int64_t nskips = 1 + levels * c.num_res_blocks + (levels - 1);
    for (int64_t i = 0; i < nskips; ++i) skip_sites_.push_back("skip." + std::to_string(i));
  }

  std::string arch() const override { return "unet"; }
  std::string default_attention_site() const override { return "mid.attn.0"; }
  std::string config_json() const override { return cfg_.to_json(); }
  std::vector<int64_t> sample_shape() const override { return {cfg_.in_channels, cfg_.height, cfg_.width}; }
  int64_t num_classes() const override { return cfg_.num_classes; }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const Cond& c) override {
    check(x.dim() == 4 && x.size(1) == cfg_.in_channels && x.size(2) == cfg_.height && x.size(3) == cfg_.width,
          "unet: input of shape ", x.sizes(), " does not match the model's [N, ", cfg_.in_channels, ", ",
          cfg_.height, ", ", cfg_.width, "]");
    const Hooks* hk = hooks_->empty() ? nullptr : hooks_.get();
    const int64_t N = x.size(0);
    auto h = x.to(conv_in->weight.scalar_type());

    auto tt = t.reshape({-1});
    if (tt.numel() == 1 && N != 1) tt = tt.expand({N});
    check(tt.numel() == N, "unet: ", tt.numel(), " times for a batch of ", N);
    auto emb = time_embed->forward(tt.to(x.device()));
    if (label_emb) {
      auto labels = c.labels.defined() ? c.labels.reshape({-1}) : torch::full({N}, -1, torch::kInt64);
      check(labels.numel() == N, "unet: ", labels.numel(), " class labels for a batch of ", N);
      auto y = label_emb->forward(labels.to(x.device()));
      if (hk) y = hk->apply("label_emb", y);
      emb = emb + y;
    } else if (c.labels.defined() && c.labels.numel() > 0) {
      check(c.labels.max().item<int64_t>() < 0, "unet: the model is unconditional but class labels were given");
    }
    if (hk) emb = hk->apply("temb", emb);

    std::vector<torch::Tensor> skips;
    skips.reserve(skip_sites_.size());
    h = conv_in->forward(h);
    skips.push_back(h);
    for (auto& lv : down_) {
      for (size_t i = 0; i < lv->res.size(); ++i) {
        h = lv->res[i]->forward(h, emb, hk);
        if (!lv->attn.empty()) h = lv->attn[i]->forward(h, hk);
        skips.push_back(h);
      }
      if (lv->resample) {
        h = lv->resample->forward(h, emb, hk);
        skips.push_back(h);
      } else if (lv->down) {
        h = lv->down->forward(h);
        skips.push_back(h);
      }
    }
    h = mid_->res[0]->forward(h, emb, hk);
    h = mid_->attn[0]->forward(h, hk);
    h = mid_->res[1]->forward(h, emb, hk);
    for (int64_t l = int64_t(up_.size()) - 1; l >= 0; --l) {
      auto& lv = up_[l];
      for (size_t i = 0; i < lv->res.size(); ++i) {
        auto s = std::move(skips.back());
        skips.pop_back();
        if (hk) s = hk->apply(skip_sites_[skips.size()], s);
        h = lv->res[i]->forward(torch::cat({h, s}, 1), emb, hk);
        if (!lv->attn.empty()) h = lv->attn[i]->forward(h, hk);
      }
      if (lv->resample)
        h = lv->resample->forward(h, emb, hk);
      else if (lv->up)
        h = lv->up->forward(h);
    }
    h = conv_out->forward(detail::silu_owned(norm_out->forward(h)));
    return h.to(x.scalar_type());
  }

 private:
  UNetConfig cfg_;
  TimestepEmbedder time_embed{nullptr};
  LabelEmbedder label_emb{nullptr};
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  GroupNorm32 norm_out{nullptr};
  std::vector<Level> down_, up_;
  Level mid_{nullptr};
  std::vector<std::string> skip_sites_;
};

}  // namespace

NetworkPtr make_unet(const UNetConfig& cfg) {
  auto net = std::make_shared<UNet>(cfg);
  net->eval();
  return net;
}

}  // namespace tweedie
