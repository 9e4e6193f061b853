// The architecture of SD-format models from their own configs
// (models/sd_config.h) and the three forms they are saved in
// (models/sd_export.h): tiny sd1-, sd2- and sdxl-structured models with
// widths, heads, depths, norms and schedules no released model has, saved as
// a tweedie file, an LDM single file with its yaml and a diffusers folder,
// load to the same architecture and give bit-identical images; the same
// file without its config is read by the preset rules (and then differs or
// is refused); configs that contradict the weights, and options tweedie's
// networks do not have, are Errors naming the field.
#include <filesystem>

#include <gtest/gtest.h>

#include "cli_testing.h"
#include "sd_testing.h"
#include "testing.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/safetensors.h"
#include "tweedie/io/yaml.h"
#include "tweedie/models/sd_config.h"
#include "tweedie/models/sd_export.h"
#include "tweedie/pipelines/stable_diffusion.h"

namespace tweedie {
namespace {

using testing::error_of;
using testing::kTokenizer;
using testing::random_clip;
using testing::randomized;
namespace fs = std::filesystem;

#define EXPECT_ERROR(stmt, needle)                                                                 \
  do {                                                                                             \
    const std::string e_ = error_of([&] { (void)(stmt); });                                        \
    EXPECT_NE(e_.find(needle), std::string::npos) << "expected '" << (needle) << "' in: " << e_; \
  } while (0)

std::string tmp(const std::string& n) { return ::testing::TempDir() + "/sdcfg_" + n; }

SdRequest request() {
  SdRequest r;
  r.prompt = "a (red:1.2) coat";
  r.negative = "blurry";
  r.width = r.height = 16;
  r.steps = 2;
  r.sampler = "euler";
  r.cfg = 4;
  r.seed = 3;
  return r;
}

SdPipelineOptions with_tokenizer() {
  SdPipelineOptions o;
  o.tokenizer = kTokenizer;
  return o;
}

class SdConfigForms : public ::testing::TestWithParam<std::string> {};

TEST_P(SdConfigForms, TweedieLdmAndDiffusersFormsGiveBitIdenticalImages) {
  const std::string family = GetParam();
  const SdCheckpoint c = testing::tiny_sd(family, 11);
  const std::string tw = tmp(family + "_tweedie.safetensors"), ldm = tmp(family + "_ldm.safetensors"),
                    dif = tmp(family + "_diffusers");
  fs::remove_all(dif);
  save_sd_checkpoint(c, tw, SdForm::Tweedie);
  save_sd_checkpoint(c, ldm, SdForm::Ldm);
  SdSaveOptions so;
  so.tokenizer = kTokenizer;
  save_sd_checkpoint(c, dif, SdForm::Diffusers, so);
  ASSERT_TRUE(fs::exists(tmp(family + "_ldm.yaml")));

  // Each form loads to the architecture it was saved with.
  for (const std::string& path : {tw, ldm, dif}) {
    SCOPED_TRACE(path);
    const SdCheckpoint k = load_sd_checkpoint(path);
    EXPECT_EQ(k.family, family);
    EXPECT_EQ(k.prediction, c.prediction);
    EXPECT_NE(k.config_source, "preset");
    EXPECT_DOUBLE_EQ(k.vae_config.scaling_factor, 0.5);
    EXPECT_DOUBLE_EQ(k.schedule.beta_end, 0.013);
    EXPECT_EQ(k.size_embed_dim, c.size_embed_dim);
    for (int64_t l = 0; l < 2; ++l) EXPECT_EQ(k.unet_config.heads_at(l), c.unet_config.heads_at(l)) << "level " << l;
    ASSERT_EQ(k.text_encoders.size(), c.text_encoders.size());
    for (size_t i = 0; i < c.text_encoders.size(); ++i) {
      const auto &a = k.text_encoders[i], &b = c.text_encoders[i];
      EXPECT_EQ(a.config.heads, b.config.heads);
      EXPECT_EQ(a.config.activation, b.config.activation);
      EXPECT_EQ(a.pad_token, b.pad_token);
      EXPECT_EQ(a.final_norm, b.final_norm);
      EXPECT_EQ(a.pooled, b.pooled);
      // diffusers' non-SDXL text encoder holds only the layers it uses.
      const bool truncated = path == dif && family != "sdxl";
      EXPECT_EQ(a.config.layers, truncated ? b.layer : b.config.layers);
      EXPECT_EQ(a.layer, b.layer);
    }
  }

  // And to the same images, bit for bit.
  const SdRequest r = request();
  StableDiffusion a(tw, with_tokenizer()), b(ldm, with_tokenizer()), d(dif);
  const torch::Tensor xa = sd_generate(a, r);
  ASSERT_EQ(xa.sizes(), (std::vector<int64_t>{1, 3, 16, 16}));
  EXPECT_TRUE(torch::isfinite(xa).all().item<bool>());
  EXPECT_TRUE(torch::equal(xa, sd_generate(b, r)));
  EXPECT_TRUE(torch::equal(xa, sd_generate(d, r)));

  // The same weights without a config fall back to the presets: other heads,
  // layers, scale or size embedding, so another image or a clear refusal.
  const std::string bare = tmp(family + "_bare.safetensors");
  fs::copy_file(ldm, bare, fs::copy_options::overwrite_existing);
  if (family == "sd1") {  // a 32-wide text tower: its heads are not in the weights
    EXPECT_ERROR(load_sd_checkpoint(bare), "32 wide, not a multiple of 64, so its attention heads cannot be told");
  } else {
    const SdCheckpoint k = load_sd_checkpoint(bare);
    EXPECT_EQ(k.config_source, "preset");
    EXPECT_EQ(k.family, family);
    if (family == "sdxl") {
      EXPECT_ERROR(StableDiffusion(bare, with_tokenizer()), "6 size embeddings of 256");
    } else {
      StableDiffusion p(bare, with_tokenizer());
      EXPECT_FALSE(torch::equal(xa, sd_generate(p, r)));
    }
  }
  // ... and the yaml given explicitly restores it.
  SdPipelineOptions o = with_tokenizer();
  o.config = tmp(family + "_ldm.yaml");
  StableDiffusion q(bare, o);
  EXPECT_TRUE(torch::equal(xa, sd_generate(q, r)));

  // Saving over an existing folder is refused; nothing half-written is left.
  EXPECT_ERROR(save_sd_checkpoint(c, dif, SdForm::Diffusers, so), "already exists");
}

INSTANTIATE_TEST_SUITE_P(Families, SdConfigForms, ::testing::Values("sd1", "sd2", "sdxl"));

// The issue's case: a diffusers folder with a 32-wide cross-attention (like
// the tiny test pipelines many projects use) and a non-released SD2 text
// depth loads from its configs.
TEST(SdConfig, DiffusersFoldersOfAnyWidthLoad) {
  SdCheckpoint c = testing::tiny_sd("sd1", 5);
  SdSaveOptions so;
  so.tokenizer = kTokenizer;
  const std::string dir = tmp("width32");
  fs::remove_all(dir);
  save_sd_checkpoint(c, dir, SdForm::Diffusers, so);
  const SdCheckpoint k = load_sd_checkpoint(dir);
  EXPECT_EQ(k.unet_config.context_dim, 32);
  EXPECT_EQ(k.config_source, "diffusers config.json");
  EXPECT_EQ(k.unet_config.heads_at(1), (std::pair<int64_t, int64_t>{4, 16}));
}

void write_json(const std::string& path, const std::string& text) { write_file_atomic(path, text); }

TEST(SdConfig, ContradictionsAndUnsupportedOptionsAreErrors) {
  const SdCheckpoint c = testing::tiny_sd("sd1", 6);
  const std::string ldm = tmp("contra.safetensors"), yaml = tmp("contra.yaml");
  save_sd_checkpoint(c, ldm, SdForm::Ldm);
  const std::string good = read_file(yaml);
  auto with = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) s.replace(at, from.size(), to);
    write_file_atomic(yaml, s);
    return error_of([&] { load_sd_checkpoint(ldm); });
  };
  EXPECT_NE(with("context_dim: 32", "context_dim: 768").find("context_dim = 768 but the weights have 32"), std::string::npos);
  EXPECT_NE(with("model_channels: 32", "model_channels: 320").find("model_channels = 320 but the weights have 32"),
            std::string::npos);
  EXPECT_NE(with("num_heads: 4", "num_heads: 5").find("num_heads"), std::string::npos);
  EXPECT_NE(with("parameterization: \"eps\"", "parameterization: \"x0\"").find("unsupported parameterization"),
            std::string::npos);
  EXPECT_NE(with("layer: \"last\"", "layer: \"pooled\"").find("unsupported (expected last or hidden)"), std::string::npos);
  EXPECT_NE(with("model:", "model: &a").find("anchors"), std::string::npos);
  write_file_atomic(yaml, good);
  EXPECT_EQ(error_of([&] { load_sd_checkpoint(ldm); }), "");

  // diffusers: options tweedie's UNet does not have, sizes that disagree.
  SdSaveOptions so;
  so.tokenizer = kTokenizer;
  const std::string dir = tmp("contra_diffusers");
  fs::remove_all(dir);
  save_sd_checkpoint(c, dir, SdForm::Diffusers, so);
  const std::string cfg = read_file(dir + "/unet/config.json");
  auto unet_with = [&](const std::string& key, const std::string& value) {
    std::string s = cfg;
    s.insert(s.find('{') + 1, "\"" + key + "\": " + value + ",");
    write_file_atomic(dir + "/unet/config.json", s);
    return error_of([&] { load_sd_checkpoint(dir); });
  };
  EXPECT_NE(unet_with("class_embed_type", "\"timestep\"").find("'class_embed_type' = \"timestep\": is not supported"),
            std::string::npos);
  EXPECT_NE(unet_with("time_cond_proj_dim", "256").find("time_cond_proj_dim"), std::string::npos);
  EXPECT_NE(unet_with("only_cross_attention", "true").find("only_cross_attention"), std::string::npos);
  write_file_atomic(dir + "/unet/config.json", cfg);
  EXPECT_EQ(error_of([&] { load_sd_checkpoint(dir); }), "");
  const std::string te = read_file(dir + "/text_encoder/config.json");
  std::string bad = te;
  bad.replace(bad.find("\"hidden_size\": 32"), 17, "\"hidden_size\": 64");
  write_file_atomic(dir + "/text_encoder/config.json", bad);
  EXPECT_ERROR(load_sd_checkpoint(dir), "hidden_size = 64 but the weights have 32");
  write_file_atomic(dir + "/text_encoder/config.json", te);

  // tweedie JSON: unknown keys and contradictions.
  const std::string json_cfg = tmp("contra.json");
  write_json(json_cfg, R"({"unet": {"model_channels": 64}})");
  SdLoadOptions lo;
  lo.config = json_cfg;
  EXPECT_ERROR(load_sd_checkpoint(ldm, lo), "unet.model_channels = 64 but the weights have 32");
  write_json(json_cfg, R"({"unets": {}})");
  EXPECT_ERROR(load_sd_checkpoint(ldm, lo), "unknown key 'unets'");
  write_json(json_cfg, R"({"family": "sdxl"})");
  EXPECT_ERROR(load_sd_checkpoint(ldm, lo), "family = \"sdxl\" but the weights have \"sd1\"");
  lo.config = tmp("contra.txt");
  write_json(lo.config, "{}");
  EXPECT_ERROR(load_sd_checkpoint(ldm, lo), "--config must be an LDM/SGM .yaml or a tweedie .json config");
}

// tweedie convert moves a model between forms without changing its images.
TEST(SdConfig, ConvertCommandKeepsTheImages) {
  const SdCheckpoint c = testing::tiny_sd("sd2", 8);
  const std::string ldm = tmp("conv_ldm.safetensors"), dif = tmp("conv_diffusers"), back = tmp("conv_back.safetensors");
  fs::remove_all(dif);
  save_sd_checkpoint(c, ldm, SdForm::Ldm);
  auto r = testing::cli("convert -m " + ldm + " --to diffusers -o " + dif + " --tokenizer " + kTokenizer);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("architecture from sdcfg_conv_ldm.yaml"), std::string::npos) << r.out;
  r = testing::cli("convert -m " + dif + " --to tweedie -o " + back);
  ASSERT_EQ(r.code, 0) << r.out;
  StableDiffusion a(ldm, with_tokenizer()), b(dif), d(back, with_tokenizer());
  const SdRequest q = request();
  const auto x = sd_generate(a, q);
  EXPECT_TRUE(torch::equal(x, sd_generate(b, q)));
  EXPECT_TRUE(torch::equal(x, sd_generate(d, q)));
  testing::expect_error("convert -m " + ldm + " --to onnx -o " + tmp("x.onnx"), "unknown checkpoint form 'onnx'");
  testing::expect_error("convert -m " + ldm + " --to ldm -o " + tmp("x.ckpt"), "written as .safetensors", tmp("x.ckpt"));
  testing::expect_error("convert -m " + ldm + " --to diffusers -o " + dif, "already exists");
  testing::expect_error("convert -m " + ldm + " -o " + tmp("y.safetensors"), "--to is required");
}

// The real LDM and SGM inference yamls' shapes, read by the YAML subset.
TEST(Yaml, ReadsLdmAndSgmConfigs) {
  const std::string v1 = R"(model:
  base_learning_rate: 1.0e-04
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.0120
    num_timesteps_cond: 1
    log_every_t: 200
    timesteps: 1000
    first_stage_key: "jpg"
    image_size: 64
    channels: 4
    cond_stage_trainable: false   # Note: different from the one we trained before
    conditioning_key: crossattn
    monitor: val/loss_simple_ema
    scale_factor: 0.18215
    use_ema: False

    scheduler_config: # 10000 warmup steps
      target: ldm.lr_scheduler.LambdaLinearScheduler
      params:
        warm_up_steps: [ 10000 ]
        cycle_lengths: [ 10000000000000 ] # incredibly large number to prevent corner cases
        f_start: [ 1.e-6 ]
        f_max: [ 1. ]
        f_min: [ 1. ]

    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        image_size: 32 # unused
        attention_resolutions: [ 4, 2, 1 ]
        channel_mult: [ 1, 2, 4, 4 ]
        num_heads: 8
        use_spatial_transformer: True
        context_dim: 768
        use_checkpoint: True
        legacy: False

    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
)";
  const auto j = parse_yaml(v1, "v1-inference.yaml");
  const auto& p = j["model"]["params"];
  EXPECT_DOUBLE_EQ(p["linear_end"].get<double>(), 0.012);
  EXPECT_EQ(p["timesteps"].get<int64_t>(), 1000);
  EXPECT_EQ(p["first_stage_key"], "jpg");
  EXPECT_EQ(p["cond_stage_trainable"], false);
  EXPECT_EQ(p["use_ema"], false);
  EXPECT_EQ(p["conditioning_key"], "crossattn");
  EXPECT_DOUBLE_EQ(p["scheduler_config"]["params"]["f_start"][0].get<double>(), 1e-6);
  EXPECT_EQ(p["scheduler_config"]["params"]["cycle_lengths"][0].get<int64_t>(), 10000000000000);
  EXPECT_EQ(p["unet_config"]["params"]["channel_mult"], (nlohmann::json{1, 2, 4, 4}));
  EXPECT_EQ(p["unet_config"]["params"]["use_spatial_transformer"], true);
  EXPECT_FALSE(p["cond_stage_config"].contains("params"));
  EXPECT_EQ(p["cond_stage_config"]["target"], "ldm.modules.encoders.modules.FrozenCLIPEmbedder");

  const std::string xl = R"(model:
  target: sgm.models.diffusion.DiffusionEngine
  params:
    conditioner_config:
      target: sgm.modules.GeneralConditioner
      params:
        emb_models:
          # crossattn cond
          - is_trainable: False
            input_key: txt
            target: sgm.modules.encoders.modules.FrozenCLIPEmbedder
            params:
              layer: hidden
              layer_idx: 11
          - is_trainable: False
            input_key: original_size_as_tuple
            target: sgm.modules.encoders.modules.ConcatTimestepEmbedderND
            params:
              outdim: 256  # multiplied by two
    flags: {a: 1, 'b c': [x, "y, z"], d: {}}
    empty: []
    list:
    - 1
    -
      - 2
      - -3.5
)";
  const auto k = parse_yaml(xl, "sd_xl_base.yaml");
  const auto& em = k["model"]["params"]["conditioner_config"]["params"]["emb_models"];
  ASSERT_EQ(em.size(), 2u);
  EXPECT_EQ(em[0]["input_key"], "txt");
  EXPECT_EQ(em[0]["params"]["layer_idx"].get<int64_t>(), 11);
  EXPECT_EQ(em[1]["params"]["outdim"].get<int64_t>(), 256);
  const auto& fl = k["model"]["params"]["flags"];
  EXPECT_EQ(fl["a"].get<int64_t>(), 1);
  EXPECT_EQ(fl["b c"], (nlohmann::json{"x", "y, z"}));
  EXPECT_TRUE(fl["d"].is_object() && fl["d"].empty());
  EXPECT_TRUE(k["model"]["params"]["empty"].is_array());
  EXPECT_EQ(k["model"]["params"]["list"], (nlohmann::json{1, nlohmann::json{2, -3.5}}));

  // What the subset refuses, with the line.
  auto err = [](const std::string& text) { return error_of([&] { parse_yaml(text, "x.yaml"); }); };
  EXPECT_NE(err("a: &x 1\nb: *x\n").find("x.yaml:1: anchors"), std::string::npos);
  EXPECT_NE(err("a: |\n  text\n").find("x.yaml:1: block scalars"), std::string::npos);
  EXPECT_NE(err("a: 1\na: 2\n").find("x.yaml:2: duplicate key 'a'"), std::string::npos);
  EXPECT_NE(err("a:\n\tb: 1\n").find("x.yaml:2: tabs"), std::string::npos);
  EXPECT_NE(err("a: [1, 2\n").find("unterminated flow collection"), std::string::npos);
  EXPECT_NE(err("a: 1\n   b: 2\n").find("x.yaml:2: bad indentation"), std::string::npos);
  EXPECT_NE(err("a: \"open\n").find("unterminated quoted scalar"), std::string::npos);
  EXPECT_NE(err("a: b: c\n").find("needs its own line"), std::string::npos);
  EXPECT_NE(err(std::string("a: 1\0", 5)).find("NUL"), std::string::npos);
  EXPECT_NE(err("- a\nb: 1\n").find("unexpected indentation"), std::string::npos);
  EXPECT_TRUE(parse_yaml("", "e.yaml").is_null());
  EXPECT_EQ(parse_yaml("--- # doc\nk: 'it''s'\n", "q.yaml")["k"], "it's");
}

}  // namespace
}  // namespace tweedie
