// DiT (Peebles & Xie 2023) with optional U-ViT long skips (Bao et al. 2023):
// structure, initialization, config keys and hook sites are documented in
// include/tweedie/models/dit.h. Verified in tests/test_networks.cpp: output
// shapes with and without long skips, output exactly zero at init
// (adaLN-Zero), null class vs class 0, attention hooks, gradients reach
// every parameter, bf16 agrees with fp32, safetensors round trip, config errors.
#include "tweedie/models/dit.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <torch/nn/init.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>

#include "../core/config_reader.h"
#include "tweedie/core/error.h"
#include "tweedie/nn/attention.h"
#include "tweedie/nn/embedding.h"
#include "tweedie/nn/modulation.h"
#include "tweedie/nn/norm.h"

namespace tweedie {

// ---------------------------------------------------------------- config

DiTConfig DiTConfig::from_json(const std::string& text) {
  detail::ConfigReader r("dit", text);
  DiTConfig c;
  c.in_channels = r.integer("in_channels", c.in_channels, 1);
  c.out_channels = r.integer("out_channels", c.in_channels, 1);
  r.image_size(c.height, c.width);
  c.patch_size = r.integer("patch_size", c.patch_size, 1);
  c.hidden_size = r.integer("hidden_size", c.hidden_size, 1);
  c.depth = r.integer("depth", c.depth, 1);
  c.num_heads = r.integer("num_heads", c.num_heads, 1);
  c.mlp_ratio = r.number("mlp_ratio", c.mlp_ratio);
  c.num_classes = r.integer("num_classes", c.num_classes, 0);
  c.long_skips = r.boolean("long_skips", c.long_skips);
  c.time_embedding = r.string("time_embedding", c.time_embedding);
  c.time_scale = r.number("time_scale", c.time_scale);
  r.finish();
  c.validate();
  return c;
}

std::string DiTConfig::to_json() const {
  nlohmann::ordered_json j;
  j["in_channels"] = in_channels;
  j["out_channels"] = out_channels;
  j["height"] = height;
  j["width"] = width;
  j["patch_size"] = patch_size;
  j["hidden_size"] = hidden_size;
  j["depth"] = depth;
  j["num_heads"] = num_heads;
  j["mlp_ratio"] = mlp_ratio;
  j["num_classes"] = num_classes;
  j["long_skips"] = long_skips;
  j["time_embedding"] = time_embedding;
  j["time_scale"] = time_scale;
  return j.dump();
}

void DiTConfig::validate() const {
  auto bad = [](const char* key, const auto& value, const std::string& why) {
    std::ostringstream o;
    o << value;
    fail("dit config: '", key, "' = ", o.str(), ": ", why);
  };
  for (auto [k, v] : {std::pair<const char*, int64_t>{"in_channels", in_channels}, {"out_channels", out_channels},
                      {"height", height}, {"width", width}, {"patch_size", patch_size}, {"hidden_size", hidden_size},
                      {"depth", depth}, {"num_heads", num_heads}})
    if (v < 1) bad(k, v, "must be >= 1");
  if (num_classes < 0) bad("num_classes", num_classes, "must be >= 0 (0 = unconditional)");
  if (height % patch_size) bad("patch_size", patch_size, "does not divide height " + std::to_string(height));
  if (width % patch_size) bad("patch_size", patch_size, "does not divide width " + std::to_string(width));
  if (hidden_size % num_heads)
    bad("num_heads", num_heads, "does not divide hidden_size " + std::to_string(hidden_size));
  if (hidden_size % 4) bad("hidden_size", hidden_size, "must be divisible by 4 (2-D sin-cos position embedding)");
  if (!(mlp_ratio > 0) || int64_t(hidden_size * mlp_ratio) < 1)
    bad("mlp_ratio", mlp_ratio, "must be positive (MLP width = hidden_size * mlp_ratio >= 1)");
  if (long_skips && depth < 3) bad("long_skips", "true", "needs depth >= 3, got depth " + std::to_string(depth));
  if (!(time_scale > 0 && std::isfinite(time_scale))) bad("time_scale", time_scale, "must be a positive number");
  if (time_embedding != "sinusoidal" && time_embedding != "fourier")
    bad("time_embedding", "\"" + time_embedding + "\"", "must be \"sinusoidal\" or \"fourier\"");
}

torch::Tensor sincos_pos_embed_2d(int64_t dim, int64_t gh, int64_t gw) {
  check(dim % 4 == 0, "2-D sin-cos position embedding needs a dimension divisible by 4, got ", dim);
  auto opt = torch::TensorOptions().dtype(torch::kFloat64);
  auto omega = torch::pow(10000.0, -torch::arange(dim / 4, opt) / double(dim / 4));  // [D/4]
  auto one_d = [&](const torch::Tensor& pos) {                                    // [M] -> [M, D/2]
    auto a = pos.reshape({-1, 1}) * omega.unsqueeze(0);
    return torch::cat({a.sin(), a.cos()}, 1);
  };
  auto rows = torch::arange(gh, opt).view({gh, 1}).expand({gh, gw}).reshape({-1});
  auto cols = torch::arange(gw, opt).view({1, gw}).expand({gh, gw}).reshape({-1});
  return torch::cat({one_d(cols), one_d(rows)}, 1).to(torch::kFloat32);  // DiT: the first half is the column
}

// ---------------------------------------------------------------- network

namespace {

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t dim, int64_t hidden) {
    fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2->forward(torch::gelu(fc1->forward(x), "tanh")); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

class DiTBlockImpl : public torch::nn::Module {
 public:
  DiTBlockImpl(int64_t dim, int64_t heads, int64_t mlp_hidden, bool skip, const std::string& path)
      : site_out_(path + ".out"), site_mlp_(path + ".mlp.out") {
    attn = register_module("attn", Attention(dim, heads, 0, path + ".attn"));
    mlp = register_module("mlp", Mlp(dim, mlp_hidden));
    adaLN_modulation = register_module("adaLN_modulation", AdaLNModulation(dim, dim, 6));
    if (skip) skip_linear = register_module("skip_linear", torch::nn::Linear(2 * dim, dim));
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& c, const torch::Tensor& skip, const Hooks* hk) {
    if (skip_linear) x = skip_linear->forward(torch::cat({x, skip}, -1));
    auto m = adaLN_modulation->forward(c);  // shift, scale, gate (attention), shift, scale, gate (MLP)
    x = torch::addcmul(x, m[2].unsqueeze(1), attn->forward(modulate(layer_norm_f32(x), m[0], m[1]), {}, hk));
    auto f = mlp->forward(modulate(layer_norm_f32(x), m[3], m[4]));
    if (hk) f = hk->apply(site_mlp_, f);
    x = torch::addcmul(x, m[5].unsqueeze(1), f);
    return hk ? hk->apply(site_out_, x) : x;
  }
  Attention attn{nullptr};
  Mlp mlp{nullptr};
  AdaLNModulation adaLN_modulation{nullptr};
  torch::nn::Linear skip_linear{nullptr};

 private:
  std::string site_out_, site_mlp_;
};
TORCH_MODULE(DiTBlock);

class FinalLayerImpl : public torch::nn::Module {
 public:
  FinalLayerImpl(int64_t dim, int64_t out) {
    linear = register_module("linear", torch::nn::Linear(dim, out));
    adaLN_modulation = register_module("adaLN_modulation", AdaLNModulation(dim, dim, 2));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& c) {
    auto m = adaLN_modulation->forward(c);
    return linear->forward(modulate(layer_norm_f32(x), m[0], m[1]));
  }
  torch::nn::Linear linear{nullptr};
  AdaLNModulation adaLN_modulation{nullptr};
};
TORCH_MODULE(FinalLayer);

class PatchEmbedImpl : public torch::nn::Module {
 public:
  PatchEmbedImpl(int64_t in, int64_t dim, int64_t p) {
    proj = register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, dim, p).stride(p)));
  }
  torch::Tensor forward(const torch::Tensor& x) { return proj->forward(x).flatten(2).transpose(1, 2); }  // [N, T, D]
  torch::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

class DiT : public Network {
 public:
  explicit DiT(const DiTConfig& c) : cfg_(c) {
    c.validate();
    const int64_t D = c.hidden_size, p = c.patch_size;
    gh_ = c.height / p, gw_ = c.width / p;
    x_embedder = register_module("x_embedder", PatchEmbed(c.in_channels, D, p));
    t_embedder = register_module(
        "t_embedder", TimestepEmbedder(256, D, time_embed_kind_from_string(c.time_embedding), c.time_scale));
    if (c.num_classes > 0) y_embedder = register_module("y_embedder", LabelEmbedder(c.num_classes, D));
    pos_embed = register_buffer("pos_embed", sincos_pos_embed_2d(D, gh_, gw_).unsqueeze(0));
    n_skips_ = c.long_skips ? (c.depth - 1) / 2 : 0;
    auto list = register_module("blocks", torch::nn::ModuleList());
    const int64_t mlp_hidden = int64_t(D * c.mlp_ratio);
    for (int64_t i = 0; i < c.depth; ++i) {
      blocks_.push_back(DiTBlock(D, c.num_heads, mlp_hidden, i >= c.depth - n_skips_, "blocks." + std::to_string(i)));
      list->push_back(blocks_.back());
    }
    final_layer = register_module("final_layer", FinalLayer(D, p * p * c.out_channels));
    initialize();
  }

  std::string arch() const override { return "dit"; }
  std::string default_attention_site() const override { return "blocks." + std::to_string(cfg_.depth / 2) + ".attn"; }
  std::string config_json() const override { return cfg_.to_json(); }
  std::vector<int64_t> sample_shape() const override { return {cfg_.in_channels, cfg_.height, cfg_.width}; }
  int64_t num_classes() const override { return cfg_.num_classes; }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const Cond& c) override {
    check(x.dim() == 4 && x.size(1) == cfg_.in_channels && x.size(2) == cfg_.height && x.size(3) == cfg_.width,
          "dit: input of shape ", x.sizes(), " does not match the model's [N, ", cfg_.in_channels, ", ",
          cfg_.height, ", ", cfg_.width, "]");
    const Hooks* hk = hooks_->empty() ? nullptr : hooks_.get();
    const int64_t N = x.size(0), p = cfg_.patch_size, C = cfg_.out_channels;
    auto dtype = x_embedder->proj->weight.scalar_type();
    auto h = x_embedder->forward(x.to(dtype)) + pos_embed.to(dtype);  // [N, T, D]

    auto tt = t.reshape({-1});
    if (tt.numel() == 1 && N != 1) tt = tt.expand({N});
    check(tt.numel() == N, "dit: ", tt.numel(), " times for a batch of ", N);
    auto emb = t_embedder->forward(tt.to(x.device()));
    if (y_embedder) {
      auto labels = c.labels.defined() ? c.labels.reshape({-1}) : torch::full({N}, -1, torch::kInt64);
      check(labels.numel() == N, "dit: ", labels.numel(), " class labels for a batch of ", N);
      auto y = y_embedder->forward(labels.to(x.device()));
      if (hk) y = hk->apply("label_emb", y);
      emb = emb + y;
    } else if (c.labels.defined() && c.labels.numel() > 0) {
      check(c.labels.max().item<int64_t>() < 0, "dit: the model is unconditional but class labels were given");
    }
    if (hk) emb = hk->apply("temb", emb);

    std::vector<torch::Tensor> skips;
    const int64_t depth = blocks_.size();
    for (int64_t i = 0; i < depth; ++i) {
      torch::Tensor s;
      if (i >= depth - n_skips_) {
        s = std::move(skips.back());
        skips.pop_back();
      }
      h = blocks_[i]->forward(h, emb, s, hk);
      if (i < n_skips_) skips.push_back(h);
    }
    h = final_layer->forward(h, emb);  // [N, T, p*p*C]
    // unpatchify: [N, gh, gw, p, p, C] -> [N, C, gh*p, gw*p]
    h = h.view({N, gh_, gw_, p, p, C}).permute({0, 5, 1, 3, 2, 4}).reshape({N, C, gh_ * p, gw_ * p});
    return h.to(x.scalar_type());
  }

 private:
  void initialize() {
    torch::NoGradGuard g;
    for (auto& m : modules(/*include_self=*/false))
      if (auto* lin = m->as<torch::nn::LinearImpl>()) {
        torch::nn::init::xavier_uniform_(lin->weight);
        if (lin->bias.defined()) lin->bias.zero_();
      }
    auto& w = x_embedder->proj->weight;
    torch::nn::init::xavier_uniform_(w.view({w.size(0), -1}));
    x_embedder->proj->bias.zero_();
    if (y_embedder) torch::nn::init::normal_(y_embedder->embedding_table->weight, 0.0, 0.02);
    for (int i : {0, 2}) torch::nn::init::normal_(t_embedder->mlp[i]->as<torch::nn::LinearImpl>()->weight, 0.0, 0.02);
    for (auto& b : blocks_) {
      b->adaLN_modulation->linear->weight.zero_();
      b->adaLN_modulation->linear->bias.zero_();
    }
    final_layer->adaLN_modulation->linear->weight.zero_();
    final_layer->adaLN_modulation->linear->bias.zero_();
    final_layer->linear->weight.zero_();
    final_layer->linear->bias.zero_();
  }

  DiTConfig cfg_;
  int64_t gh_ = 0, gw_ = 0, n_skips_ = 0;
  PatchEmbed x_embedder{nullptr};
  TimestepEmbedder t_embedder{nullptr};
  LabelEmbedder y_embedder{nullptr};
  torch::Tensor pos_embed;
  std::vector<DiTBlock> blocks_;
  FinalLayer final_layer{nullptr};
};

}  // namespace

NetworkPtr make_dit(const DiTConfig& cfg) {
  auto net = std::make_shared<DiT>(cfg);
  net->eval();
  return net;
}

}  // namespace tweedie
