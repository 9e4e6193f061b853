// Shared fixtures of the Stable Diffusion tests: the CLIP tokenizer folder,
// random weights for any module, random CLIP text encoders in HF names.
#pragma once
#include <sys/stat.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tweedie/io/fs.h"
#include "tweedie/io/state_dict.h"
#include "tweedie/models/autoencoder_kl.h"
#include "tweedie/models/clip_text.h"
#include "tweedie/models/sd_checkpoint.h"
#include "tweedie/models/sd_export.h"
#include "tweedie/models/sd_unet.h"
#include "tweedie/nn/module_weights.h"

namespace tweedie::testing {

inline std::string utf8(uint32_t c) {  // c < 0x800
  std::string o;
  if (c < 0x80) {
    o += char(c);
  } else {
    o += char(0xC0 | (c >> 6));
    o += char(0x80 | (c & 0x3F));
  }
  return o;
}

// The real CLIP vocabulary when ../shared has it; otherwise a stand-in in the
// same format with the same special tokens (CLIP's byte-to-unicode alphabet,
// every byte a token with and without "</w>", one merge), so these tests run
// everywhere. Token ids then differ from CLIP's; no test relies on them.
inline std::string make_tokenizer() {
  const std::string real = std::string(TWEEDIE_SOURCE_DIR) + "/../shared/clip-tokenizer";
  if (std::ifstream(real + "/vocab.json").good()) return real;
  const std::string dir = ::testing::TempDir() + "/standin_clip_tokenizer";
  ::mkdir(dir.c_str(), 0755);
  std::string vocab = "{";
  int id = 0, extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    std::string ch = utf8(printable ? uint32_t(b) : uint32_t(256 + extra++));
    if (ch == "\"" || ch == "\\") ch = "\\" + ch;  // JSON escapes
    vocab += "\"" + ch + "\": " + std::to_string(id++) + ", ";
    vocab += "\"" + ch + "</w>\": " + std::to_string(id++) + ", ";
  }
  vocab += "\"at</w>\": 512, \"<|startoftext|>\": 49406, \"<|endoftext|>\": 49407}";
  write_file_atomic(dir + "/vocab.json", vocab);
  write_file_atomic(dir + "/merges.txt", "#version: 0.2\na t</w>\n");
  return dir;
}

inline const std::string kTokenizer = make_tokenizer();

// A module's tensors with random values (norm weights near 1), by name.
inline StateDict randomized(torch::nn::Module& m, double std) {
  StateDict sd;
  torch::NoGradGuard ng;
  for (auto& [name, t] : module_tensors(m)) {
    auto v = t.clone();
    if (v.is_floating_point()) {
      const bool norm_weight = name.find("norm") != std::string::npos && name.size() > 7 &&
                               name.compare(name.size() - 7, 7, ".weight") == 0;
      v = norm_weight ? 1 + 0.1 * torch::randn_like(v) : std * torch::randn_like(v);
    }
    sd[name] = v;
  }
  return sd;
}

// Random CLIP text encoder weights of a config, in HF names.
inline StateDict random_clip(const ClipTextConfig& tc) {
  ClipTextModel te(tc);
  StateDict out;
  for (auto& [k, v] : randomized(*te, 0.05))
    out[k.rfind("text_model.", 0) == 0 || k.rfind("text_projection", 0) == 0 ? k : "text_model." + k] = v;
  return out;
}

// Two layers, intermediate 64, 64-wide heads.
inline StateDict random_clip(int64_t width, int64_t projection, const std::string& activation) {
  ClipTextConfig tc = ClipTextConfig::clip_l();
  tc.width = width;
  tc.heads = width / 64;
  tc.layers = 2;
  tc.intermediate = 64;
  tc.projection_dim = projection;
  tc.activation = activation;
  return random_clip(tc);
}

inline ClipTextConfig text_config(int64_t width, int64_t heads, int64_t layers, const std::string& act, int64_t proj) {
  ClipTextConfig c;
  c.width = width, c.heads = heads, c.layers = layers, c.intermediate = 48, c.activation = act, c.projection_dim = proj;
  c.layer_norm_eps = 1e-5;
  return c;
}

inline SdTextEncoder text_encoder(const std::string& name, const ClipTextConfig& cfg, int64_t layer, bool norm, bool pooled,
                           const std::string& pad) {
  SdTextEncoder t;
  t.name = name;
  t.config = cfg;
  t.weights = random_clip(cfg);
  t.layer = layer, t.final_norm = norm, t.pooled = pooled, t.pad_token = pad;
  return t;
}

// A tiny checkpoint of a family's structure with sizes no released model
// has (32/64-channel UNet of 2 levels, 2x VAE, 2-3 layer text encoders with
// non-64 head sizes), a VAE scale of 0.5 and beta_end 0.013: sd1 (4 heads,
// context 32), sd2 (16 channels per head, v-prediction, penultimate
// OpenCLIP-style layer), sdxl (two 64-wide towers of 2 and 4 heads, size
// embeddings of 8).
inline SdCheckpoint tiny_sd(const std::string& family, uint64_t seed) {
  torch::manual_seed(seed);
  SdCheckpoint c;
  c.source = "tiny_" + family;
  c.family = family;
  SdUNetConfig u = SdUNetConfig::preset(family);
  u.height = u.width = 8;
  u.model_channels = 32;
  u.channel_mult = {1, 2};
  AutoencoderKLConfig v;
  v.ch = 32, v.ch_mult = {1, 2}, v.num_res_blocks = 1;
  v.scaling_factor = 0.5;
  c.schedule.beta_end = 0.013;
  if (family == "sd1") {
    u.num_res_blocks = 1, u.attention_resolutions = {1, 2}, u.transformer_depth = {1, 2};
    u.num_heads = 4, u.num_head_channels = -1, u.context_dim = 32;
    c.text_encoders.push_back(text_encoder("clip_l", text_config(32, 2, 3, "quick_gelu", 0), 3, true, false, "<|endoftext|>"));
    c.prediction = "eps";
  } else if (family == "sd2") {
    u.num_res_blocks = 2, u.attention_resolutions = {2}, u.transformer_depth = {1, 1};
    u.num_head_channels = 16, u.context_dim = 64;
    c.text_encoders.push_back(text_encoder("openclip_h", text_config(64, 2, 3, "gelu", 64), 2, true, false, "!"));
    c.prediction = "v";
  } else {
    u.num_res_blocks = 1, u.attention_resolutions = {2}, u.transformer_depth = {1, 2};
    u.num_head_channels = 8, u.context_dim = 128, u.adm_in_channels = 40 + 6 * 8;
    c.size_embed_dim = 8;
    c.text_encoders.push_back(text_encoder("clip_l", text_config(64, 2, 3, "quick_gelu", 0), 2, false, false, "<|endoftext|>"));
    c.text_encoders.push_back(text_encoder("openclip_bigg", text_config(64, 4, 3, "gelu", 40), 2, false, true, "!"));
    c.prediction = "eps";
  }
  c.unet_config = u;
  c.vae_config = v;
  auto unet = make_sd_unet(u);
  c.unet = randomized(*unet, 0.08);
  AutoencoderKL vae(v);
  c.vae = randomized(*vae, 0.08);
  return c;
}

// tiny_sd("sd1", seed) saved as a diffusers folder with the tokenizer, one
// folder per process (ctest runs tests in parallel processes sharing TempDir).
inline std::string tiny_sd_folder(const std::string& name, uint64_t seed) {
  const std::string d = ::testing::TempDir() + "/" + name + "_" + std::to_string(::getpid());
  std::filesystem::remove_all(d);
  SdSaveOptions so;
  so.tokenizer = kTokenizer;
  save_sd_checkpoint(tiny_sd("sd1", seed), d, SdForm::Diffusers, so);
  return d;
}

}  // namespace tweedie::testing
