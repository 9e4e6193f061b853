// Stable Diffusion image networks: the SD UNet (SD1/SD2/SDXL/inpainting),
// AutoencoderKL and TAESD. The expected checkpoint key sets are derived
// here, independently of the modules, by following the construction loops
// of LDM/SGM openaimodel.py, LDM model.py and taesd.py; the same generator
// reproduces the parameter counts of the released models. Also: a float64
// hand computation of a SpatialTransformer, hooks, bf16 vs fp32, SDXL's
// vector conditioning, tiling. Tiny configs keep the file at a few seconds.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/models/autoencoder_kl.h"
#include "tweedie/models/network.h"
#include "tweedie/models/sd_unet.h"
#include "tweedie/models/taesd.h"
#include "tweedie/nn/norm.h"
#include "tweedie/nn/spatial_transformer.h"

using namespace tweedie;
using tweedie::testing::error_of;

namespace {

using Shapes = std::map<std::string, std::vector<int64_t>>;

// ------------------------------------------------ expected names (LDM rules)

struct Keys {
  Shapes s;
  void add(const std::string& k, std::vector<int64_t> shape) { s[k] = std::move(shape); }
  void linear(const std::string& p, int64_t in, int64_t out, bool bias = true) {
    add(p + ".weight", {out, in});
    if (bias) add(p + ".bias", {out});
  }
  void conv(const std::string& p, int64_t in, int64_t out, int64_t k, bool bias = true) {
    add(p + ".weight", {out, in, k, k});
    if (bias) add(p + ".bias", {out});
  }
  void norm(const std::string& p, int64_t c) {
    add(p + ".weight", {c});
    add(p + ".bias", {c});
  }
  int64_t count() const {
    int64_t n = 0;
    for (auto& [k, v] : s) {
      int64_t m = 1;
      for (auto d : v) m *= d;
      n += m;
    }
    return n;
  }
};

// openaimodel.py ResBlock (use_scale_shift_norm = False).
void ldm_resblock(Keys& K, const std::string& p, int64_t in, int64_t out, int64_t temb) {
  K.norm(p + ".in_layers.0", in);
  K.conv(p + ".in_layers.2", in, out, 3);
  K.linear(p + ".emb_layers.1", temb, out);
  K.norm(p + ".out_layers.0", out);
  K.conv(p + ".out_layers.3", out, out, 3);
  if (in != out) K.conv(p + ".skip_connection", in, out, 1);
}

// attention.py SpatialTransformer with BasicTransformerBlocks.
void ldm_transformer(Keys& K, const std::string& p, int64_t ch, int64_t depth, int64_t ctx, bool linear) {
  K.norm(p + ".norm", ch);
  auto proj = [&](const std::string& n) { linear ? K.linear(p + n, ch, ch) : K.conv(p + n, ch, ch, 1); };
  proj(".proj_in");
  for (int64_t d = 0; d < depth; ++d) {
    const std::string b = p + ".transformer_blocks." + std::to_string(d);
    for (auto [a, kv] : {std::pair<std::string, int64_t>{".attn1", ch}, {".attn2", ctx}}) {
      K.linear(b + a + ".to_q", ch, ch, false);
      K.linear(b + a + ".to_k", kv, ch, false);
      K.linear(b + a + ".to_v", kv, ch, false);
      K.linear(b + a + ".to_out.0", ch, ch);
    }
    K.linear(b + ".ff.net.0.proj", ch, 8 * ch);
    K.linear(b + ".ff.net.2", 4 * ch, ch);
    for (auto n : {".norm1", ".norm2", ".norm3"}) K.norm(b + n, ch);
  }
  proj(".proj_out");
}

// openaimodel.py UNetModel.__init__, loop by loop.
Shapes ldm_unet_keys(const SdUNetConfig& c) {
  Keys K;
  const int64_t mc = c.model_channels, temb = 4 * mc;
  K.linear("time_embed.0", mc, temb);
  K.linear("time_embed.2", temb, temb);
  if (c.adm_in_channels > 0) {
    K.linear("label_emb.0.0", c.adm_in_channels, temb);
    K.linear("label_emb.0.2", temb, temb);
  }
  K.conv("input_blocks.0.0", c.in_channels, mc, 3);
  std::vector<int64_t> chans{mc};
  int64_t ch = mc, ds = 1, idx = 1;
  auto attn = [&](int64_t ds) {
    for (auto a : c.attention_resolutions)
      if (a == ds) return true;
    return false;
  };
  const int64_t L = c.channel_mult.size();
  for (int64_t level = 0; level < L; ++level) {
    for (int64_t nr = 0; nr < c.num_res_blocks; ++nr) {
      const std::string p = "input_blocks." + std::to_string(idx++);
      ldm_resblock(K, p + ".0", ch, c.channel_mult[level] * mc, temb);
      ch = c.channel_mult[level] * mc;
      if (attn(ds)) ldm_transformer(K, p + ".1", ch, c.transformer_depth[level], c.context_dim, c.use_linear_in_transformer);
      chans.push_back(ch);
    }
    if (level != L - 1) {
      K.conv("input_blocks." + std::to_string(idx++) + ".0.op", ch, ch, 3);
      chans.push_back(ch);
      ds *= 2;
    }
  }
  ldm_resblock(K, "middle_block.0", ch, ch, temb);
  ldm_transformer(K, "middle_block.1", ch, c.middle_depth(), c.context_dim, c.use_linear_in_transformer);
  ldm_resblock(K, "middle_block.2", ch, ch, temb);
  idx = 0;
  for (int64_t level = L - 1; level >= 0; --level) {
    for (int64_t i = 0; i <= c.num_res_blocks; ++i) {
      const std::string p = "output_blocks." + std::to_string(idx++);
      const int64_t ich = chans.back();
      chans.pop_back();
      ldm_resblock(K, p + ".0", ch + ich, mc * c.channel_mult[level], temb);
      ch = mc * c.channel_mult[level];
      int sub = 1;
      if (attn(ds)) ldm_transformer(K, p + "." + std::to_string(sub++), ch, c.transformer_depth[level], c.context_dim,
                                    c.use_linear_in_transformer);
      if (level && i == c.num_res_blocks) {
        K.conv(p + "." + std::to_string(sub) + ".conv", ch, ch, 3);
        ds /= 2;
      }
    }
  }
  K.norm("out.0", ch);
  K.conv("out.2", mc, c.out_channels, 3);
  return K.s;
}

// ldm/modules/diffusionmodules/model.py Encoder, Decoder + AutoencoderKL.
Shapes ldm_vae_keys(const AutoencoderKLConfig& c) {
  Keys K;
  auto block = [&](const std::string& p, int64_t in, int64_t out) {
    K.norm(p + ".norm1", in);
    K.conv(p + ".conv1", in, out, 3);
    K.norm(p + ".norm2", out);
    K.conv(p + ".conv2", out, out, 3);
    if (in != out) K.conv(p + ".nin_shortcut", in, out, 1);
  };
  auto mid = [&](const std::string& p, int64_t ch) {
    block(p + ".mid.block_1", ch, ch);
    K.norm(p + ".mid.attn_1.norm", ch);
    for (auto n : {".q", ".k", ".v", ".proj_out"}) K.conv(p + ".mid.attn_1" + n, ch, ch, 1);
    block(p + ".mid.block_2", ch, ch);
  };
  const int64_t L = c.ch_mult.size();
  K.conv("encoder.conv_in", c.in_channels, c.ch, 3);
  int64_t block_in = c.ch;
  for (int64_t i = 0; i < L; ++i) {
    block_in = c.ch * (i == 0 ? 1 : c.ch_mult[i - 1]);
    const int64_t block_out = c.ch * c.ch_mult[i];
    for (int64_t j = 0; j < c.num_res_blocks; ++j) {
      block("encoder.down." + std::to_string(i) + ".block." + std::to_string(j), block_in, block_out);
      block_in = block_out;
    }
    if (i != L - 1) K.conv("encoder.down." + std::to_string(i) + ".downsample.conv", block_in, block_in, 3);
  }
  mid("encoder", block_in);
  K.norm("encoder.norm_out", block_in);
  K.conv("encoder.conv_out", block_in, 2 * c.z_channels, 3);
  K.conv("quant_conv", 2 * c.z_channels, 2 * c.embed_dim, 1);
  K.conv("post_quant_conv", c.embed_dim, c.z_channels, 1);
  block_in = c.ch * c.ch_mult.back();
  K.conv("decoder.conv_in", c.z_channels, block_in, 3);
  mid("decoder", block_in);
  for (int64_t i = L - 1; i >= 0; --i) {
    const int64_t block_out = c.ch * c.ch_mult[i];
    for (int64_t j = 0; j <= c.num_res_blocks; ++j) {
      block("decoder.up." + std::to_string(i) + ".block." + std::to_string(j), block_in, block_out);
      block_in = block_out;
    }
    if (i != 0) K.conv("decoder.up." + std::to_string(i) + ".upsample.conv", block_in, block_in, 3);
  }
  K.norm("decoder.norm_out", block_in);
  K.conv("decoder.conv_out", block_in, c.out_ch, 3);
  return K.s;
}

// taesd.py Encoder / Decoder (nn.Sequential indices), width w.
Shapes taesd_keys(int64_t w, int64_t latent) {
  Keys K;
  auto block = [&](const std::string& p) {
    for (auto i : {"0", "2", "4"}) K.conv(p + ".conv." + i, w, w, 3);
  };
  K.conv("encoder.0", 3, w, 3);
  block("encoder.1");
  for (int i : {2, 6, 10}) {
    K.conv("encoder." + std::to_string(i), w, w, 3, false);
    for (int j = 1; j <= 3; ++j) block("encoder." + std::to_string(i + j));
  }
  K.conv("encoder.14", w, latent, 3);
  K.conv("decoder.1", latent, w, 3);
  for (int i : {3, 8, 13}) {
    for (int j = 0; j < 3; ++j) block("decoder." + std::to_string(i + j));
    K.conv("decoder." + std::to_string(i + 4), w, w, 3, false);
  }
  block("decoder.18");
  K.conv("decoder.19", w, 3, 3);
  return K.s;
}

Shapes module_keys(torch::nn::Module& m) {
  Shapes s;
  for (auto& p : m.named_parameters()) s[p.key()] = p.value().sizes().vec();
  for (auto& b : m.named_buffers()) s[b.key()] = b.value().sizes().vec();
  return s;
}

// Both ways, with the first few differences named.
void expect_same_keys(const Shapes& expected, const Shapes& got) {
  int shown = 0;
  for (auto& [k, v] : expected) {
    auto it = got.find(k);
    if (it == got.end()) {
      if (shown++ < 8) ADD_FAILURE() << "missing " << k;
    } else if (it->second != v) {
      if (shown++ < 8) ADD_FAILURE() << "shape of " << k << ": " << torch::IntArrayRef(it->second) << " vs expected "
                                     << torch::IntArrayRef(v);
    }
  }
  for (auto& [k, v] : got)
    if (!expected.count(k) && shown++ < 8) ADD_FAILURE() << "unexpected " << k;
  EXPECT_EQ(expected.size(), got.size());
}

// ------------------------------------------------ tiny configs

const char* kTinySd1 = R"({"preset":"sd1","model_channels":32,"channel_mult":[1,2],"num_res_blocks":1,
    "attention_resolutions":[1,2],"num_heads":2,"context_dim":24,"image_size":8})";
const char* kTinySd2 = R"({"preset":"sd2","model_channels":32,"channel_mult":[1,2,2],"num_res_blocks":2,
    "attention_resolutions":[2,4],"num_head_channels":16,"context_dim":20,"image_size":8})";
const char* kTinySdxl = R"({"preset":"sdxl","model_channels":32,"channel_mult":[1,2,2],"num_res_blocks":1,
    "attention_resolutions":[4,2],"transformer_depth":[0,1,2],"num_head_channels":16,"context_dim":24,
    "adm_in_channels":40,"image_size":8})";
const char* kTinyInpaint = R"({"preset":"sd1","in_channels":9,"model_channels":32,"channel_mult":[1,2],
    "num_res_blocks":1,"attention_resolutions":[2],"num_heads":2,"context_dim":24,"image_size":8})";

SdUNetConfig parse(const char* j) { return SdUNetConfig::from_json(j); }

void perturb(torch::nn::Module& m, double std = 0.05, uint64_t seed = 1) {
  torch::manual_seed(seed);
  torch::NoGradGuard g;
  for (auto& p : m.parameters()) p.add_(torch::randn_like(p) * std);
}

struct Inputs {
  torch::Tensor x, t;
  Cond c;
};

Inputs inputs(const SdUNetConfig& c, int64_t N = 2, int64_t hw = 8, uint64_t seed = 3) {
  torch::manual_seed(seed);
  Inputs in;
  in.x = torch::randn({N, c.out_channels, hw, hw});
  in.t = torch::tensor({999.0, 250.0}).narrow(0, 0, N);
  in.c.context = torch::randn({N, 5, c.context_dim});
  if (c.adm_in_channels) in.c.extra["y"] = torch::randn({N, c.adm_in_channels});
  if (c.in_channels > c.out_channels)
    in.c.extra["c_concat"] = torch::randn({N, c.in_channels - c.out_channels, hw, hw});
  return in;
}

torch::Tensor run(Network& n, const Inputs& in) {
  torch::NoGradGuard g;
  return n.forward(in.x, in.t, in.c);
}

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kFloat64) - b.to(torch::kFloat64)).norm() / b.to(torch::kFloat64).norm()).item<double>();
}

}  // namespace

// ================================================================ UNet

TEST(SdUnet, KeySetsEqualTheLdmNamingRules) {
  for (auto j : {kTinySd1, kTinySd2, kTinySdxl, kTinyInpaint}) {
    SCOPED_TRACE(j);
    auto net = make_network("sd_unet", j);
    expect_same_keys(ldm_unet_keys(parse(j)), module_keys(*net));
  }
  // Spot checks of the layout the rules produce (tiny SD1: 2 levels, 1 block each).
  auto s = module_keys(*make_network("sd_unet", kTinySd1));
  EXPECT_EQ(s.at("input_blocks.1.1.proj_in.weight"), (std::vector<int64_t>{32, 32, 1, 1}));
  EXPECT_EQ(s.at("input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"), (std::vector<int64_t>{32, 24}));
  EXPECT_EQ(s.at("input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight"), (std::vector<int64_t>{256, 32}));
  EXPECT_EQ(s.at("input_blocks.2.0.op.weight"), (std::vector<int64_t>{32, 32, 3, 3}));
  EXPECT_EQ(s.at("input_blocks.3.0.skip_connection.weight"), (std::vector<int64_t>{64, 32, 1, 1}));
  EXPECT_EQ(s.at("output_blocks.1.2.conv.weight"), (std::vector<int64_t>{64, 64, 3, 3}));  // after attention: .2
  EXPECT_FALSE(s.count("input_blocks.1.1.transformer_blocks.0.attn1.to_q.bias"));
  auto x = module_keys(*make_network("sd_unet", kTinySdxl));
  EXPECT_EQ(x.at("label_emb.0.0.weight"), (std::vector<int64_t>{128, 40}));
  EXPECT_EQ(x.at("input_blocks.3.1.proj_in.weight"), (std::vector<int64_t>{64, 64}));  // linear
  EXPECT_TRUE(x.count("input_blocks.5.1.transformer_blocks.1.norm3.weight"));  // depth 2 at the last level
  EXPECT_FALSE(x.count("input_blocks.1.1.norm.weight"));  // no attention at the first SDXL level
  auto ip = module_keys(*make_network("sd_unet", kTinyInpaint));
  EXPECT_EQ(ip.at("input_blocks.0.0.weight"), (std::vector<int64_t>{32, 9, 3, 3}));
}

// The same rules give the parameter counts of the released checkpoints.
TEST(SdUnet, NamingRulesReproduceReleasedParameterCounts) {
  auto count = [](const Shapes& s) {
    Keys k;
    k.s = s;
    return k.count();
  };
  EXPECT_EQ(count(ldm_unet_keys(SdUNetConfig::preset("sd1"))), 859520964);
  EXPECT_EQ(count(ldm_unet_keys(SdUNetConfig::preset("sd2"))), 865910724);
  EXPECT_EQ(count(ldm_unet_keys(SdUNetConfig::preset("sdxl"))), 2567463684);
  EXPECT_EQ(count(ldm_vae_keys(AutoencoderKLConfig{})), 83653863);
}

// Constructing the full-size networks takes ~15 s and 14 GB (SDXL): run by hand
// with --gtest_also_run_disabled_tests.
TEST(SdUnet, DISABLED_FullSizeNetworksHaveTheReleasedKeySets) {
  for (auto p : {"sd1", "sd2", "sdxl"}) {
    SCOPED_TRACE(p);
    auto net = make_sd_unet(SdUNetConfig::preset(p));
    expect_same_keys(ldm_unet_keys(SdUNetConfig::preset(p)), module_keys(*net));
  }
}

TEST(SdUnet, ConfigPresetsRoundTripAndErrors) {
  for (auto j : {"{}", R"({"preset":"sd2"})", R"({"preset":"sdxl"})", kTinySdxl}) {
    auto c = SdUNetConfig::from_json(j);
    EXPECT_EQ(SdUNetConfig::from_json(c.to_json()).to_json(), c.to_json());
  }
  auto xl = SdUNetConfig::preset("sdxl");
  EXPECT_EQ(xl.depth_at(0), 0);
  EXPECT_EQ(xl.depth_at(2), 10);
  EXPECT_EQ(xl.heads_for(1280), (std::pair<int64_t, int64_t>{20, 64}));
  EXPECT_EQ(SdUNetConfig::preset("sd1").heads_for(640), (std::pair<int64_t, int64_t>{8, 80}));
  EXPECT_EQ(SdUNetConfig::from_json(R"({"transformer_depth":2})").transformer_depth, (std::vector<int64_t>{2, 2, 2, 2}));
  EXPECT_NE(error_of([] { SdUNetConfig::from_json(R"({"preset":"sd3"})"); }).find("unknown preset 'sd3'"),
            std::string::npos);
  EXPECT_NE(error_of([] { SdUNetConfig::from_json(R"({"transformer_depth":[1,1]})"); }).find("'transformer_depth'"),
            std::string::npos);
  EXPECT_NE(error_of([] { SdUNetConfig::from_json(R"({"attention_resolutions":[3]})"); }).find("'attention_resolutions'"),
            std::string::npos);
  EXPECT_NE(error_of([] { SdUNetConfig::from_json(R"({"num_head_channels":48})"); }).find("'num_head_channels'"),
            std::string::npos);
  EXPECT_NE(error_of([] { SdUNetConfig::from_json(R"({"contxt_dim":5})"); }).find("unknown key 'contxt_dim'"),
            std::string::npos);
}

TEST(SdUnet, ShapesConditioningAndErrors) {
  for (auto j : {kTinySd1, kTinySdxl, kTinyInpaint}) {
    SCOPED_TRACE(j);
    auto c = parse(j);
    auto net = make_network("sd_unet", j);
    perturb(*net);
    auto in = inputs(c);
    auto y = run(*net, in);
    EXPECT_EQ(y.sizes(), torch::IntArrayRef({2, 4, 8, 8}));
    EXPECT_TRUE(y.isfinite().all().item<bool>());
    // Any size divisible by 2^(levels-1); a batch-1 context is broadcast.
    auto in2 = inputs(c, 2, 16);
    auto ctx1 = in2.c.context.narrow(0, 0, 1);
    auto y2 = run(*net, in2);
    in2.c.context = ctx1;
    auto y3 = run(*net, in2);
    EXPECT_EQ(y3.sizes(), torch::IntArrayRef({2, 4, 16, 16}));
    EXPECT_TRUE(y3.narrow(0, 0, 1).allclose(y2.narrow(0, 0, 1), 1e-5, 1e-6));
    // The context matters.
    auto in3 = in;
    in3.c.context = in.c.context * -1;
    EXPECT_GT((run(*net, in3) - y).abs().max().item<double>(), 1e-4);
  }
  auto net = make_network("sd_unet", kTinySdxl);
  auto in = inputs(parse(kTinySdxl));
  in.c.extra.erase("y");
  EXPECT_NE(error_of([&] { run(*net, in); }).find("extra[\"y\"]"), std::string::npos);
  in.c.context = torch::Tensor();
  in.c.extra["y"] = torch::zeros({2, 40});
  EXPECT_NE(error_of([&] { run(*net, in); }).find("needs a text context"), std::string::npos);
  auto ip = make_network("sd_unet", kTinyInpaint);
  auto ii = inputs(parse(kTinyInpaint));
  ii.c.extra.clear();
  EXPECT_NE(error_of([&] { run(*ip, ii); }).find("c_concat"), std::string::npos);
  ii.x = torch::randn({2, 4, 13, 13});
  EXPECT_NE(error_of([&] { run(*ip, ii); }).find("divisible by 2"), std::string::npos);
}

// The time embedding is LDM's: time_embed.2(silu(time_embed.0([cos(t f), sin(t f)]))),
// f_i = 10000^(-i/160) (here 1/16 of that width).
TEST(SdUnet, TimeEmbeddingIsLdmCosThenSin) {
  auto net = make_network("sd_unet", kTinySd1);
  perturb(*net);
  Hooks& hooks = net->hooks();
  torch::Tensor temb;
  hooks.add("temb", [&](const std::string&, const torch::Tensor& v, const HookContext&) {
    temb = v;
    return v;
  });
  auto in = inputs(parse(kTinySd1));
  run(*net, in);
  torch::NoGradGuard g;
  auto params = net->named_parameters();
  auto t = in.t.to(torch::kFloat64).unsqueeze(1);
  auto i = torch::arange(16, torch::kFloat64);
  auto args = t * torch::exp(-std::log(10000.0) * i / 16.0);
  auto e = torch::cat({args.cos(), args.sin()}, 1);
  auto lin = [&](const torch::Tensor& x, const std::string& p) {
    return torch::addmm(params[p + ".bias"].to(torch::kFloat64), x, params[p + ".weight"].to(torch::kFloat64).t());
  };
  auto ref = lin(torch::silu(lin(e, "time_embed.0")), "time_embed.2");
  EXPECT_LT((temb.to(torch::kFloat64) - ref).abs().max().item<double>(), 1e-5);
}

TEST(SdUnet, SdxlVectorCondIsPooledThenSixFourierEmbeddings) {
  auto pooled = torch::randn({2, 1280});
  auto y = sdxl_vector_cond(pooled, 1024, 768, 16, 32, 1024, 1024);
  ASSERT_EQ(y.sizes(), torch::IntArrayRef({2, 2816}));
  EXPECT_TRUE(y.narrow(1, 0, 1280).equal(pooled));
  const double vals[6] = {1024, 768, 16, 32, 1024, 1024};
  double worst = 0;
  for (int k = 0; k < 6; ++k)
    for (int i = 0; i < 128; ++i) {
      const double a = vals[k] * std::exp(-std::log(10000.0) * i / 128.0);
      for (int b = 0; b < 2; ++b) {
        worst = std::max(worst, std::abs(y[b][1280 + 256 * k + i].item<double>() - std::cos(a)));
        worst = std::max(worst, std::abs(y[b][1280 + 256 * k + 128 + i].item<double>() - std::sin(a)));
      }
    }
  EXPECT_LT(worst, 2e-4);  // float32 arguments up to 1024 rad
}

// One SpatialTransformer (depth 2, both projection kinds) against a float64
// computation written out from attention.py.
TEST(SdUnet, SpatialTransformerMatchesFloat64HandComputation) {
  for (bool linear : {false, true}) {
    SCOPED_TRACE(linear);
    SpatialTransformerOptions o;
    o.channels = 16, o.heads = 2, o.dim_head = 8, o.depth = 2, o.context_dim = 12, o.groups = 4, o.use_linear = linear;
    SpatialTransformer st(o);
    st->to(torch::kFloat64);
    perturb(*st, 0.2);
    auto P = st->named_parameters();
    auto W = [&](const std::string& k) { return P[k]; };
    auto x = torch::randn({2, 16, 3, 5}, torch::kFloat64), ctx = torch::randn({2, 7, 12}, torch::kFloat64);
    torch::Tensor got;
    {
      torch::NoGradGuard g;
      got = st->forward(x, ctx);
    }
    torch::NoGradGuard g;
    // GroupNorm(4 groups, eps 1e-6) by hand.
    auto xg = x.reshape({2, 4, -1});
    auto mu = xg.mean(-1, true), var = (xg - mu).pow(2).mean(-1, true);
    auto h = ((xg - mu) / (var + 1e-6).sqrt()).reshape({2, 16, 3, 5}) * W("norm.weight").view({1, 16, 1, 1}) +
             W("norm.bias").view({1, 16, 1, 1});
    auto tok = h.reshape({2, 16, 15}).transpose(1, 2);  // [B, L, C]
    auto lin = [&](const torch::Tensor& t, const std::string& p, bool bias = true) {
      auto w = W(p + ".weight");
      auto y = torch::matmul(t, w.reshape({w.size(0), w.size(1)}).t());
      return bias ? y + W(p + ".bias") : y;
    };
    tok = lin(tok, "proj_in");
    auto ln = [&](const torch::Tensor& t, const std::string& p) {
      auto m = t.mean(-1, true), v = (t - m).pow(2).mean(-1, true);
      return (t - m) / (v + 1e-5).sqrt() * W(p + ".weight") + W(p + ".bias");
    };
    auto attention = [&](const torch::Tensor& q_in, const torch::Tensor& kv_in, const std::string& p) {
      auto q = lin(q_in, p + ".to_q", false), k = lin(kv_in, p + ".to_k", false), v = lin(kv_in, p + ".to_v", false);
      std::vector<torch::Tensor> heads;
      for (int hd = 0; hd < 2; ++hd) {
        auto qh = q.narrow(2, 8 * hd, 8), kh = k.narrow(2, 8 * hd, 8), vh = v.narrow(2, 8 * hd, 8);
        auto s = torch::matmul(qh, kh.transpose(1, 2)) / std::sqrt(8.0);
        heads.push_back(torch::matmul(torch::softmax(s, -1), vh));
      }
      return lin(torch::cat(heads, 2), p + ".to_out.0");
    };
    for (int d = 0; d < 2; ++d) {
      const std::string b = "transformer_blocks." + std::to_string(d);
      tok = tok + attention(ln(tok, b + ".norm1"), ln(tok, b + ".norm1"), b + ".attn1");
      tok = tok + attention(ln(tok, b + ".norm2"), ctx, b + ".attn2");
      auto pr = lin(ln(tok, b + ".norm3"), b + ".ff.net.0.proj");
      auto a = pr.narrow(2, 0, 64), gate = pr.narrow(2, 64, 64);
      auto gelu = gate * 0.5 * (1 + torch::erf(gate / std::sqrt(2.0)));
      tok = tok + lin(a * gelu, b + ".ff.net.2");
    }
    tok = lin(tok, "proj_out");
    auto ref = tok.transpose(1, 2).reshape({2, 16, 3, 5}) + x;
    EXPECT_LT((got - ref).abs().max().item<double>(), 1e-10);
  }
}

TEST(SdUnet, HookSitesFireAndCrossAttentionProbsSteerTheOutput) {
  auto net = make_network("sd_unet", kTinySd1);
  perturb(*net, 0.1);
  auto in = inputs(parse(kTinySd1));
  auto base = run(*net, in);
  Hooks& hooks = net->hooks();
  std::map<std::string, std::vector<int64_t>> shape;
  hooks.add("*", [&](const std::string& s, const torch::Tensor& v, const HookContext&) {
    shape[s] = v.sizes().vec();
    return v;
  });
  auto observed = run(*net, in);
  // Observing changes nothing beyond rounding (a probs hook makes the attention
  // take its explicit path instead of the fused kernel).
  EXPECT_LT(rel_err(observed, base), 1e-5);
  for (auto s : {"temb", "skip.0", "skip.3", "input_blocks.0.out", "input_blocks.1.0.out", "input_blocks.1.out",
                 "middle_block.out", "middle_block.1.transformer_blocks.0.attn1.probs", "output_blocks.3.out",
                 "output_blocks.1.1.transformer_blocks.0.ff.out"})
    EXPECT_TRUE(shape.count(s)) << s;
  EXPECT_FALSE(shape.count("skip.4"));
  // Self-attention over the 64 positions; cross-attention over the 5 text tokens.
  EXPECT_EQ(shape["input_blocks.1.1.transformer_blocks.0.attn1.probs"], (std::vector<int64_t>{4, 64, 64}));
  EXPECT_EQ(shape["input_blocks.1.1.transformer_blocks.0.attn2.probs"], (std::vector<int64_t>{4, 64, 5}));
  EXPECT_EQ(shape["input_blocks.1.1.transformer_blocks.0.attn2.k"], (std::vector<int64_t>{2, 2, 5, 16}));
  // Prompt-to-Prompt style: replacing the cross-attention maps with "all on token 0" changes the output.
  hooks.clear();
  int replaced = 0;
  hooks.add("*.attn2.probs", [&](const std::string&, const torch::Tensor& p, const HookContext&) {
    ++replaced;
    auto q = torch::zeros_like(p);
    q.select(2, 0).fill_(1);
    return q;
  });
  auto steered = run(*net, in);
  EXPECT_EQ(replaced, 7);  // one per transformer: input_blocks 1, 3, the middle, output_blocks 0-3
  EXPECT_GT((steered - base).abs().max().item<double>(), 1e-3);
  // The probabilities path agrees with the efficient path when the hook returns them unchanged.
  hooks.clear();
  hooks.add("*.probs", [](const std::string&, const torch::Tensor& p, const HookContext&) { return p; });
  EXPECT_TRUE(run(*net, in).allclose(base, 1e-4, 1e-5));
  hooks.clear();
}

// bf16 weights and activations (channels_last, float32 GroupNorm statistics)
// stay within a few percent of float32.
TEST(SdUnet, Bf16AgreesWithFp32) {
  for (auto j : {kTinySd1, kTinySdxl}) {
    SCOPED_TRACE(j);
    auto net = make_network("sd_unet", j);
    perturb(*net, 0.05);
    auto in = inputs(parse(j), 2, 16);
    auto ref = run(*net, in);
    net->to(torch::kBFloat16);
    auto y = run(*net, in);
    EXPECT_EQ(y.scalar_type(), torch::kFloat32);
    EXPECT_LT(rel_err(y, ref), 0.03);
  }
}

// torch 1.13's own bf16 GroupNorm on channels_last input is wrong on this CPU;
// GroupNorm32 computes float32 statistics on any layout.
TEST(SdUnet, GroupNormIsRightForBf16ChannelsLast) {
  torch::manual_seed(0);
  GroupNorm32 gn(32, 320, 1e-6);
  perturb(*gn, 0.5);
  auto x = (torch::randn({1, 320, 16, 16}) * 3 + 1);
  torch::NoGradGuard g;
  auto ref = gn->forward(x);
  gn->to(torch::kBFloat16);
  auto xb = x.to(torch::kBFloat16).contiguous(torch::MemoryFormat::ChannelsLast);
  auto y = gn->forward(xb);
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(y.is_contiguous(torch::MemoryFormat::ChannelsLast));  // the layout is kept
  EXPECT_LT(rel_err(y, ref), 0.01);
  // float32 channels_last takes the same path and agrees with the NCHW one.
  gn->to(torch::kFloat32);
  auto yf = gn->forward(x.contiguous(torch::MemoryFormat::ChannelsLast));
  EXPECT_LT(rel_err(yf, gn->forward(x)), 1e-6);
  EXPECT_TRUE(yf.is_contiguous(torch::MemoryFormat::ChannelsLast));
}

// ================================================================ AutoencoderKL

namespace {
AutoencoderKLConfig tiny_vae() {
  return AutoencoderKLConfig::from_json(R"({"ch":32,"ch_mult":[1,2],"num_res_blocks":1,"norm_groups":8})");
}
}  // namespace

TEST(AutoencoderKL, KeySetEqualsTheLdmNamingRules) {
  auto c = tiny_vae();
  AutoencoderKL vae(c);
  expect_same_keys(ldm_vae_keys(c), module_keys(*vae));
  auto s = module_keys(*vae);
  EXPECT_EQ(s.at("encoder.down.1.block.0.nin_shortcut.weight"), (std::vector<int64_t>{64, 32, 1, 1}));
  EXPECT_EQ(s.at("decoder.up.1.upsample.conv.weight"), (std::vector<int64_t>{64, 64, 3, 3}));
  EXPECT_EQ(s.at("decoder.up.0.block.1.conv1.weight"), (std::vector<int64_t>{32, 32, 3, 3}));
  EXPECT_EQ(s.at("encoder.conv_out.weight"), (std::vector<int64_t>{8, 64, 3, 3}));
  // The released SD VAE (about 0.3 s to construct).
  AutoencoderKL full;
  int64_t n = 0;
  for (auto& p : full->parameters()) n += p.numel();
  EXPECT_EQ(n, 83653863);
  EXPECT_NE(error_of([] { AutoencoderKLConfig::from_json(R"({"preset":"sd3"})"); }).find("'preset'"), std::string::npos);
  EXPECT_DOUBLE_EQ(AutoencoderKLConfig::from_json(R"({"preset":"sdxl"})").scaling_factor, 0.13025);
}

TEST(AutoencoderKL, ShapesAndPosteriorSample) {
  AutoencoderKL vae(tiny_vae());
  perturb(*vae, 0.05);
  torch::NoGradGuard g;
  auto x = torch::rand({2, 3, 16, 24}) * 2 - 1;
  auto m = vae->encode_moments(x);
  ASSERT_EQ(m.sizes(), torch::IntArrayRef({2, 8, 8, 12}));
  auto mean = vae->encode(x);
  EXPECT_TRUE(mean.equal(m.narrow(1, 0, 4)));
  auto gen = at::detail::createCPUGenerator(7), gen2 = at::detail::createCPUGenerator(7);
  auto z = vae->encode(x, gen);
  auto eps = torch::randn({2, 4, 8, 12}, gen2);
  auto expected = mean + (m.narrow(1, 4, 4).clamp(-30, 20) * 0.5).exp() * eps;
  EXPECT_TRUE(z.allclose(expected, 1e-5, 1e-6));
  auto img = vae->decode(z);
  EXPECT_EQ(img.sizes(), x.sizes());
  EXPECT_NE(error_of([&] { vae->encode(torch::zeros({1, 3, 15, 16})); }).find("multiples of 2"), std::string::npos);
  EXPECT_NE(error_of([&] { vae->decode(torch::zeros({1, 3, 8, 8})); }).find("latents of shape"), std::string::npos);
}

TEST(AutoencoderKL, Bf16AgreesWithFp32) {
  AutoencoderKL vae(tiny_vae());
  perturb(*vae, 0.05);
  torch::NoGradGuard g;
  auto x = torch::rand({1, 3, 32, 32}) * 2 - 1;
  auto z = vae->encode(x);
  auto img = vae->decode(z);
  vae->to(torch::kBFloat16);
  EXPECT_LT(rel_err(vae->encode(x), z), 0.03);
  EXPECT_LT(rel_err(vae->decode(z), img), 0.03);
}

// tiled_map reproduces a local map exactly: here a stack of three 3x3
// convolutions around a nearest x2 upsampling (receptive-field radius 2
// input pixels), tiles 12 with overlap 6 and margin 2 on a 20x28 input.
TEST(AutoencoderKL, TiledMapIsExactForLocalMaps) {
  torch::manual_seed(0);
  auto w1 = torch::randn({5, 3, 3, 3}), w2 = torch::randn({5, 5, 3, 3}), w3 = torch::randn({2, 5, 3, 3});
  auto up = [&](const torch::Tensor& t) {
    auto h = torch::conv2d(t, w1, {}, 1, 1);
    h = torch::upsample_nearest2d(h, std::vector<int64_t>{h.size(2) * 2, h.size(3) * 2});
    return torch::conv2d(torch::conv2d(h, w2, {}, 1, 1), w3, {}, 1, 1);
  };
  auto x = torch::randn({1, 3, 20, 28});
  auto whole = up(x);
  auto tiled = tiled_map(x, up, 12, 6, 2, 2, 1);
  const double scale = whole.abs().max().item<double>();
  EXPECT_LT((tiled - whole).abs().max().item<double>(), 1e-6 * scale);
  // Without a margin the tile edges leak in: the margin is what makes it exact.
  EXPECT_GT((tiled_map(x, up, 12, 6, 0, 2, 1) - whole).abs().max().item<double>(), 1e-2 * scale);
  // Downscaling maps (the encoder direction): a 2x2 average pool then a 3x3 conv (radius 4 input pixels).
  auto down = [&](const torch::Tensor& t) { return torch::conv2d(torch::avg_pool2d(t, 2), w1, {}, 1, 1); };
  auto xd = torch::randn({1, 3, 40, 32});
  auto wd = down(xd);
  EXPECT_LT((tiled_map(xd, down, 24, 12, 4, 1, 2) - wd).abs().max().item<double>(), 1e-6 * wd.abs().max().item<double>());
  EXPECT_NE(error_of([&] { tiled_map(x, up, 12, 4, 2, 2, 1); }).find("overlap > 2 * margin"), std::string::npos);
}

TEST(AutoencoderKL, TiledEqualsUntiledForOneTileAndStaysClose) {
  AutoencoderKL vae(tiny_vae());
  perturb(*vae, 0.02);
  torch::NoGradGuard g;
  auto z = torch::randn({1, 4, 16, 16});
  auto img = vae->decode(z);
  EXPECT_TRUE(vae->decode_tiled(z, 16, 4).equal(img));
  auto x = torch::rand({1, 3, 32, 32}) * 2 - 1;
  EXPECT_TRUE(vae->encode_tiled(x, 32, 8).equal(vae->encode(x)));
  auto tiled = vae->decode_tiled(z, 10, 6);
  EXPECT_EQ(tiled.sizes(), img.sizes());
  // Tiles see their own GroupNorm statistics: close to, not equal to, the whole.
  EXPECT_LT(rel_err(tiled, img), 0.5);
}

// ================================================================ TAESD

TEST(Taesd, KeySetEqualsTaesdPySequentialIndices) {
  Taesd t;
  expect_same_keys(taesd_keys(64, 4), module_keys(*t));
  int64_t enc = 0, dec = 0;
  for (auto& p : t->encoder->parameters()) enc += p.numel();
  for (auto& p : t->decoder->parameters()) dec += p.numel();
  EXPECT_EQ(enc, 1222532);
  EXPECT_EQ(dec, 1222531);
  // The .pth files hold each half on its own: "1.conv.0.weight", "14.bias", ...
  auto e = module_keys(*t->encoder);
  EXPECT_TRUE(e.count("1.conv.4.bias") && e.count("2.weight") && !e.count("2.bias") && e.count("14.bias"));
}

TEST(Taesd, ShapesRangeAndExactTiledDecode) {
  Taesd t(4, 4);  // width 4 keeps it cheap; the structure is taesd.py's
  perturb(*t, 0.2);
  torch::NoGradGuard g;
  auto x = torch::rand({1, 3, 32, 48}) * 2 - 1;
  auto z = t->encode(x);
  EXPECT_EQ(z.sizes(), torch::IntArrayRef({1, 4, 4, 6}));
  // Float64: 34 layers of random weights amplify float32 rounding (which
  // differs between tile and whole-image convolution kernels) to ~1e-2.
  t->to(torch::kFloat64);
  auto z2 = torch::randn({1, 4, 40, 46}, torch::kFloat64) * 2;  // two tiles side by side
  auto img = t->decode(z2);
  EXPECT_EQ(img.sizes(), torch::IntArrayRef({1, 3, 320, 368}));
  EXPECT_LE(img.abs().max().item<double>(), 1.0);
  auto tiled = t->decode_tiled(z2, 44, 40);  // margin 19 latent pixels, above the receptive-field radius
  EXPECT_LT((tiled - img).abs().max().item<double>(), 1e-9);
  // Without the margin the zero padding at the tile edges leaks in.
  auto dec = [&](const torch::Tensor& v) { return t->decode(v); };
  EXPECT_GT((tiled_map(z2, dec, 44, 40, 0, 8, 1) - img).abs().max().item<double>(), 1e-3);
  // The decoder's upsample + conv pairs run as sub-pixel convolutions without autograd; with it, as
  // the plain pairs: the two agree to float64 rounding.
  auto small = z2.slice(2, 0, 8).slice(3, 0, 8);
  torch::Tensor plain;
  {
    torch::AutoGradMode on(true);
    ASSERT_TRUE(t->decoder->parameters()[0].requires_grad());  // so the plain path runs here
    plain = t->decode(small).detach();
  }
  EXPECT_LT((t->decode(small) - plain).abs().max().item<double>(), 1e-12);
  EXPECT_NEAR(taesd_unscale_latents(taesd_scale_latents(torch::tensor({-2.5, 0.0, 2.9}))).sub(torch::tensor({-2.5, 0.0, 2.9}))
                  .abs().max().item<double>(), 0, 1e-6);
}
