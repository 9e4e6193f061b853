// Stable Diffusion UNet (LDM / SGM openaimodel.py UNetModel with the
// checkpoint names; see include/tweedie/models/sd_unet.h for the structure,
// config keys, conditioning and hook sites). Verified in
// tests/test_sd_unet.cpp: key sets of tiny SD1/SD2/SDXL/inpainting configs
// equal the names derived from the LDM rules, shapes, hooks, bf16 vs fp32,
// SDXL vector conditioning, parameter counts of the released models.
#include "tweedie/models/sd_unet.h"

#include <nlohmann/json.hpp>

#include "../core/config_reader.h"
#include "../nn/inplace.h"
#include "tweedie/core/error.h"
#include "tweedie/nn/embedding.h"
#include "tweedie/nn/norm.h"
#include "tweedie/nn/resample.h"
#include "tweedie/nn/resblock.h"
#include "tweedie/nn/spatial_transformer.h"

namespace tweedie {

namespace nn = torch::nn;

// ---------------------------------------------------------------- config

SdUNetConfig SdUNetConfig::preset(const std::string& name) {
  SdUNetConfig c;
  if (name == "sd1") return c;
  if (name == "sd2") {
    c.num_head_channels = 64;
    c.context_dim = 1024;
    c.use_linear_in_transformer = true;
    return c;
  }
  if (name == "sdxl") {
    c.height = c.width = 128;
    c.channel_mult = {1, 2, 4};
    c.attention_resolutions = {4, 2};
    c.transformer_depth = {1, 2, 10};
    c.num_head_channels = 64;
    c.context_dim = 2048;
    c.use_linear_in_transformer = true;
    c.adm_in_channels = 2816;
    return c;
  }
  fail("sd_unet config: unknown preset '", name, "' (known: sd1, sd2, sdxl)");
}

SdUNetConfig SdUNetConfig::from_json(const std::string& text) {
  detail::ConfigReader r("sd_unet", text);
  SdUNetConfig c = preset(r.string("preset", "sd1"));
  c.in_channels = r.integer("in_channels", c.in_channels, 1);
  c.out_channels = r.integer("out_channels", c.out_channels, 1);
  r.image_size(c.height, c.width);
  c.model_channels = r.integer("model_channels", c.model_channels, 1);
  c.channel_mult = r.int_list("channel_mult", c.channel_mult, 1);
  c.num_res_blocks = r.integer("num_res_blocks", c.num_res_blocks, 1);
  c.attention_resolutions = r.int_list("attention_resolutions", c.attention_resolutions, 1);
  if (r.has("transformer_depth") && r.object()["transformer_depth"].is_number_integer())
    c.transformer_depth.assign(c.channel_mult.size(), r.integer("transformer_depth", 1, 1));
  else
    c.transformer_depth = r.int_list("transformer_depth", c.transformer_depth, 0);
  c.transformer_depth_middle = r.integer("transformer_depth_middle", c.transformer_depth_middle, -1);
  c.num_heads = r.integer("num_heads", c.num_heads, -1);
  c.num_head_channels = r.integer("num_head_channels", c.num_head_channels, -1);
  c.level_heads = r.int_list("level_heads", c.level_heads, 1);
  c.context_dim = r.integer("context_dim", c.context_dim, 1);
  c.use_linear_in_transformer = r.boolean("use_linear_in_transformer", c.use_linear_in_transformer);
  c.adm_in_channels = r.integer("adm_in_channels", c.adm_in_channels, 0);
  c.norm_groups = r.integer("norm_groups", c.norm_groups, 1);
  r.finish();
  // A preset's per-level lists follow a changed number of levels when not given.
  if (!r.has("transformer_depth") && c.transformer_depth.size() != c.channel_mult.size())
    c.transformer_depth.assign(c.channel_mult.size(), c.transformer_depth.empty() ? 1 : c.transformer_depth[0]);
  c.validate();
  return c;
}

std::string SdUNetConfig::to_json() const {
  nlohmann::ordered_json j;
  j["in_channels"] = in_channels;
  j["out_channels"] = out_channels;
  j["height"] = height;
  j["width"] = width;
  j["model_channels"] = model_channels;
  j["channel_mult"] = channel_mult;
  j["num_res_blocks"] = num_res_blocks;
  j["attention_resolutions"] = attention_resolutions;
  j["transformer_depth"] = transformer_depth;
  j["transformer_depth_middle"] = transformer_depth_middle;
  j["num_heads"] = num_heads;
  j["num_head_channels"] = num_head_channels;
  j["level_heads"] = level_heads;
  j["context_dim"] = context_dim;
  j["use_linear_in_transformer"] = use_linear_in_transformer;
  j["adm_in_channels"] = adm_in_channels;
  j["norm_groups"] = norm_groups;
  return j.dump();
}

std::pair<int64_t, int64_t> SdUNetConfig::heads_for(int64_t ch) const {
  if (num_head_channels > 0) return {ch / num_head_channels, num_head_channels};
  return {num_heads, ch / num_heads};
}

std::pair<int64_t, int64_t> SdUNetConfig::heads_at(int64_t level) const {
  const int64_t ch = model_channels * channel_mult.at(level);
  if (level_heads.empty()) return heads_for(ch);
  return {level_heads.at(level), ch / level_heads.at(level)};
}

int64_t SdUNetConfig::depth_at(int64_t level) const {
  for (auto a : attention_resolutions)
    if (a == (int64_t(1) << level)) return transformer_depth.at(level);
  return 0;
}

int64_t SdUNetConfig::middle_depth() const {
  return transformer_depth_middle >= 0 ? transformer_depth_middle : transformer_depth.back();
}

void SdUNetConfig::validate() const {
  auto bad = [](const char* key, const std::string& value, const std::string& why) {
    fail("sd_unet config: '", key, "' = ", value, ": ", why);
  };
  using detail::list_str;
  const auto S = [](int64_t v) { return std::to_string(v); };
  for (auto [k, v] : {std::pair<const char*, int64_t>{"in_channels", in_channels}, {"out_channels", out_channels},
                      {"height", height}, {"width", width}, {"model_channels", model_channels},
                      {"num_res_blocks", num_res_blocks}, {"context_dim", context_dim}, {"norm_groups", norm_groups}})
    if (v < 1) bad(k, S(v), "must be >= 1");
  const int64_t levels = channel_mult.size();
  if (levels < 1 || levels > 12) bad("channel_mult", list_str(channel_mult), "must list 1 to 12 levels");
  for (auto m : channel_mult)
    if (m < 1) bad("channel_mult", list_str(channel_mult), "entries must be positive integers");
  if (int64_t(transformer_depth.size()) != levels)
    bad("transformer_depth", list_str(transformer_depth), "needs one entry per level of channel_mult (" + S(levels) + ")");
  if (num_head_channels <= 0 && num_heads <= 0)
    bad("num_heads", S(num_heads), "give num_heads >= 1 or num_head_channels >= 1");
  const int64_t f = int64_t(1) << (levels - 1);
  if (height % f) bad("height", S(height), "must be divisible by 2^(levels-1) = " + S(f));
  if (width % f) bad("width", S(width), "must be divisible by 2^(levels-1) = " + S(f));
  std::vector<int64_t> attn_ch{model_channels * channel_mult.back()};
  for (auto a : attention_resolutions) {
    int64_t lvl = -1;
    for (int64_t l = 0; l < levels; ++l)
      if ((int64_t(1) << l) == a) lvl = l;
    if (lvl < 0)
      bad("attention_resolutions", list_str(attention_resolutions),
          "entries are downsampling factors 2^l of a level (1.." + S(f) + "), got " + S(a));
    if (transformer_depth[lvl] < 1)
      bad("transformer_depth", list_str(transformer_depth), "level " + S(lvl) + " has attention but depth 0");
    attn_ch.push_back(model_channels * channel_mult[lvl]);
  }
  if (middle_depth() < 1) bad("transformer_depth_middle", S(transformer_depth_middle), "the middle block needs depth >= 1");
  for (auto m : channel_mult)
    if ((model_channels * m) % norm_groups)
      bad("norm_groups", S(norm_groups), "does not divide the " + S(model_channels * m) + " channels of a level");
  if (!level_heads.empty()) {
    if (int64_t(level_heads.size()) != levels)
      bad("level_heads", list_str(level_heads), "needs one entry per level of channel_mult (" + S(levels) + ")");
    for (int64_t l = 0; l < levels; ++l) {
      const int64_t ch = model_channels * channel_mult[l];
      if (level_heads[l] < 1 || ch % level_heads[l])
        bad("level_heads", list_str(level_heads), "entry " + S(l) + " does not divide the " + S(ch) + " channels of its level");
    }
    attn_ch.clear();  // the rule below is replaced
  }
  for (auto ch : attn_ch) {
    if (num_head_channels > 0 && ch % num_head_channels)
      bad("num_head_channels", S(num_head_channels), "does not divide the " + S(ch) + " channels of a transformer");
    if (num_head_channels <= 0 && ch % num_heads)
      bad("num_heads", S(num_heads), "does not divide the " + S(ch) + " channels of a transformer");
  }
}

// ---------------------------------------------------------------- network

namespace {

std::shared_ptr<nn::Module> holder() { return std::make_shared<nn::Module>(); }

// One TimestepEmbedSequential of LDM: children "0", "1", "2" in order.
class SdBlockImpl : public nn::Module {
 public:
  explicit SdBlockImpl(std::string path) : path_(std::move(path)), site_out_(path_ + ".out") {}
  template <class M>
  M add(M m) {
    register_module(std::to_string(n_++), m);
    return m;
  }
  torch::Tensor forward(torch::Tensor h, const torch::Tensor& emb, const torch::Tensor& ctx, const Hooks* hk) {
    if (conv) h = conv->forward(h);
    if (res) h = res->forward(h, emb, hk);
    if (attn) h = attn->forward(h, ctx, hk);
    if (res2) h = res2->forward(h, emb, hk);
    if (down) h = down->forward(h);
    if (up) h = up->forward(h);
    return hk ? hk->apply(site_out_, h) : h;
  }
  const std::string& path() const { return path_; }

  nn::Conv2d conv{nullptr};  // input_blocks.0.0
  ResBlock res{nullptr}, res2{nullptr};  // res2: the middle block's second ResBlock
  SpatialTransformer attn{nullptr};
  Downsample down{nullptr};
  Upsample up{nullptr};

 private:
  std::string path_, site_out_;
  int n_ = 0;
};
TORCH_MODULE(SdBlock);

class SdUNet : public Network {
 public:
  explicit SdUNet(const SdUNetConfig& c) : cfg_(c) {
    c.validate();
    const int64_t mc = c.model_channels, temb = 4 * mc, levels = c.channel_mult.size();
    auto mlp = [](const std::shared_ptr<nn::Module>& h, int64_t in, int64_t out, nn::Linear& a, nn::Linear& b) {
      a = h->register_module("0", nn::Linear(in, out));
      b = h->register_module("2", nn::Linear(out, out));
    };
    mlp(register_module("time_embed", holder()), mc, temb, t_lin0_, t_lin2_);
    if (c.adm_in_channels > 0)
      mlp(register_module("label_emb", holder())->register_module("0", holder()), c.adm_in_channels, temb, y_lin0_,
          y_lin2_);

    auto ropts = [&](int64_t in, int64_t out) {
      ResBlockOptions o;
      o.in_channels = in, o.out_channels = out, o.emb_dim = temb, o.groups = c.norm_groups;
      o.scale_shift = false, o.ldm_names = true;
      return o;
    };
    auto transformer = [&](int64_t level, int64_t depth, const std::string& path) {
      SpatialTransformerOptions o;
      const int64_t ch = mc * c.channel_mult[level];
      std::tie(o.heads, o.dim_head) = c.heads_at(level);
      o.channels = ch, o.depth = depth, o.context_dim = c.context_dim, o.groups = c.norm_groups;
      o.use_linear = c.use_linear_in_transformer;
      return SpatialTransformer(o, path);
    };

    auto inputs = register_module("input_blocks", nn::ModuleList());
    auto new_block = [&](const std::shared_ptr<nn::ModuleListImpl>& list, const std::string& name, std::vector<SdBlock>& v) {
      v.push_back(SdBlock(name + "." + std::to_string(v.size())));
      list->push_back(v.back());
      return v.back();
    };
    int64_t ch = mc;
    std::vector<int64_t> skip_ch{ch};
    auto b0 = new_block(inputs, "input_blocks", in_);
    b0->conv = b0->add(nn::Conv2d(nn::Conv2dOptions(c.in_channels, ch, 3).padding(1)));
    for (int64_t l = 0; l < levels; ++l) {
      const int64_t out = mc * c.channel_mult[l], depth = c.depth_at(l);
      for (int64_t i = 0; i < c.num_res_blocks; ++i) {
        auto b = new_block(inputs, "input_blocks", in_);
        b->res = b->add(ResBlock(ropts(ch, out), b->path() + ".0"));
        ch = out;
        if (depth > 0) b->attn = b->add(transformer(l, depth, b->path() + ".1"));
        skip_ch.push_back(ch);
      }
      if (l + 1 < levels) {
        auto b = new_block(inputs, "input_blocks", in_);
        b->down = b->add(Downsample(ch, ch, true));
        skip_ch.push_back(ch);
      }
    }
    mid_ = register_module("middle_block", SdBlock("middle_block"));
    mid_->res = mid_->add(ResBlock(ropts(ch, ch), "middle_block.0"));
    mid_->attn = mid_->add(transformer(levels - 1, c.middle_depth(), "middle_block.1"));
    mid_->res2 = mid_->add(ResBlock(ropts(ch, ch), "middle_block.2"));

    auto outputs = register_module("output_blocks", nn::ModuleList());
    for (int64_t l = levels - 1; l >= 0; --l) {
      const int64_t out = mc * c.channel_mult[l], depth = c.depth_at(l);
      for (int64_t i = 0; i <= c.num_res_blocks; ++i) {
        auto b = new_block(outputs, "output_blocks", out_);
        b->res = b->add(ResBlock(ropts(ch + skip_ch.back(), out), b->path() + ".0"));
        skip_ch.pop_back();
        ch = out;
        if (depth > 0) b->attn = b->add(transformer(l, depth, b->path() + ".1"));
        if (l > 0 && i == c.num_res_blocks) b->up = b->add(Upsample(ch, ch, true));
      }
    }
    auto o = register_module("out", holder());
    norm_out_ = o->register_module("0", GroupNorm32(c.norm_groups, ch));
    conv_out_ = o->register_module("2", nn::Conv2d(nn::Conv2dOptions(ch, c.out_channels, 3).padding(1)));
    torch::NoGradGuard g;
    conv_out_->weight.zero_();
    conv_out_->bias.zero_();
    for (size_t i = 0; i < in_.size(); ++i) skip_sites_.push_back("skip." + std::to_string(i));
    for (size_t i = 0; i < out_.size(); ++i) in_sites_.push_back("output_blocks." + std::to_string(i) + ".in");
  }

  std::string arch() const override { return "sd_unet"; }
  std::string default_attention_site() const override { return "middle_block.1.transformer_blocks.0.attn1"; }
  std::string config_json() const override { return cfg_.to_json(); }
  std::vector<int64_t> sample_shape() const override { return {cfg_.out_channels, cfg_.height, cfg_.width}; }
  int64_t num_classes() const override { return 0; }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const Cond& c) override {
    const Hooks* hk = hooks_->empty() ? nullptr : hooks_.get();
    const auto dtype = conv_out_->weight.scalar_type();
    const int64_t N = x.size(0), f = int64_t(1) << (cfg_.channel_mult.size() - 1);
    check(x.dim() == 4 && x.size(2) % f == 0 && x.size(3) % f == 0,
          "sd_unet: input of shape ", x.sizes(), " is not [N, C, H, W] with H and W divisible by ", f);
    torch::Tensor h = x;
    if (x.size(1) != cfg_.in_channels) {
      auto it = c.extra.find("c_concat");
      check(it != c.extra.end() && x.size(1) + it->second.size(1) == cfg_.in_channels,
            "sd_unet: input has ", x.size(1), " channels, the model takes ", cfg_.in_channels,
            it == c.extra.end() ? " (give the rest as extra[\"c_concat\"])" : " (with extra[\"c_concat\"])");
      h = torch::cat({x, broadcast(it->second, N, "c_concat").to(x.scalar_type())}, 1);
    }
    // bf16: channels_last activations (oneDNN's blocked bf16 convolutions, no reorders).
    h = h.to(dtype);
    if (dtype == torch::kBFloat16 || dtype == torch::kHalf) h = h.contiguous(torch::MemoryFormat::ChannelsLast);

    auto tt = t.reshape({-1});
    if (tt.numel() == 1 && N != 1) tt = tt.expand({N});
    check(tt.numel() == N, "sd_unet: ", tt.numel(), " times for a batch of ", N);
    auto emb = timestep_embedding(tt.to(x.device()), cfg_.model_channels).to(dtype);
    emb = t_lin2_->forward(torch::silu(t_lin0_->forward(emb)));
    if (y_lin0_) {
      auto it = c.extra.find("y");
      check(it != c.extra.end(), "sd_unet: the model needs the vector conditioning extra[\"y\"] [N, ",
            cfg_.adm_in_channels, "] (SDXL: sdxl_vector_cond)");
      auto y = broadcast(it->second, N, "y");
      check(y.dim() == 2 && y.size(1) == cfg_.adm_in_channels, "sd_unet: extra[\"y\"] has shape ", y.sizes(),
            ", expected [N, ", cfg_.adm_in_channels, "]");
      y = y_lin2_->forward(torch::silu(y_lin0_->forward(y.to(dtype))));
      if (hk) y = hk->apply("label_emb", y);
      emb = emb + y;
    }
    if (hk) emb = hk->apply("temb", emb);

    check(c.context.defined(), "sd_unet: the model needs a text context [N, L, ", cfg_.context_dim, "]");
    auto ctx = broadcast(c.context, N, "context");
    check(ctx.dim() == 3 && ctx.size(2) == cfg_.context_dim, "sd_unet: context has shape ", ctx.sizes(),
          ", expected [N, L, ", cfg_.context_dim, "]");
    ctx = ctx.to(dtype);

    std::vector<torch::Tensor> skips;
    skips.reserve(in_.size());
    for (auto& b : in_) {
      h = b->forward(h, emb, ctx, hk);
      skips.push_back(h);
    }
    h = mid_->forward(h, emb, ctx, hk);
    for (size_t k = 0; k < out_.size(); ++k) {
      auto& b = out_[k];
      auto s = std::move(skips.back());
      skips.pop_back();
      if (hk) h = hk->apply(in_sites_[k], h);  // the backbone entering output block k (FreeU)
      if (hk) s = hk->apply(skip_sites_[skips.size()], s);
      h = b->forward(torch::cat({h, s}, 1), emb, ctx, hk);
    }
    h = conv_out_->forward(norm_out_->forward_silu(h));
    return h.to(x.scalar_type()).contiguous();
  }

 private:
  static torch::Tensor broadcast(const torch::Tensor& v, int64_t N, const char* what) {
    if (v.size(0) == N) return v;
    check(v.size(0) == 1, "sd_unet: ", what, " has batch ", v.size(0), " for an input batch of ", N);
    auto s = v.sizes().vec();
    s[0] = N;
    return v.expand(s);
  }

  SdUNetConfig cfg_;
  nn::Linear t_lin0_{nullptr}, t_lin2_{nullptr}, y_lin0_{nullptr}, y_lin2_{nullptr};
  std::vector<SdBlock> in_, out_;
  SdBlock mid_{nullptr};
  GroupNorm32 norm_out_{nullptr};
  nn::Conv2d conv_out_{nullptr};
  std::vector<std::string> skip_sites_, in_sites_;
};

}  // namespace

NetworkPtr make_sd_unet(const SdUNetConfig& cfg) {
  auto net = std::make_shared<SdUNet>(cfg);
  net->eval();
  return net;
}

torch::Tensor sdxl_vector_cond(const torch::Tensor& pooled, double orig_h, double orig_w, double crop_top,
                               double crop_left, double target_h, double target_w, int64_t dim) {
  check(pooled.dim() == 2, "sdxl_vector_cond: pooled embedding must be [N, D], got ", pooled.sizes());
  check(dim >= 2 && dim % 2 == 0, "sdxl_vector_cond: the size embedding width must be even and >= 2, got ", dim);
  const int64_t N = pooled.size(0);
  auto v = torch::tensor({orig_h, orig_w, crop_top, crop_left, target_h, target_w}, torch::kFloat64);
  auto e = timestep_embedding(v.to(pooled.device()), dim).reshape({1, 6 * dim}).expand({N, 6 * dim});
  return torch::cat({pooled, e.to(pooled.scalar_type())}, 1);
}

}  // namespace tweedie
