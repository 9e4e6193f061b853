// Stable Diffusion pipelines end to end on tiny random checkpoints written in
// the real layouts (LDM single file, diffusers folder): identical images from
// both, seeds, img2img at strength 0, blended inpainting keeps the unmasked
// latents exactly, 9-channel inpainting, InstructPix2Pix's 8-channel models
// and dual guidance, LoRA merged = LoRA at run time,
// bf16 close to fp32, and `tweedie generate` (A1111 parameters, bad input).
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <map>

#include <gtest/gtest.h>

#include "cli_testing.h"
#include "sd_testing.h"
#include "testing.h"
#include "tweedie/guide/instruct_pix2pix.h"
#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/io/npy.h"
#include "tweedie/io/safetensors.h"
#include "tweedie/nn/module_weights.h"
#include "tweedie/pipelines/stable_diffusion.h"

namespace tweedie {
namespace {

using testing::kTokenizer;
using testing::random_clip;
using testing::randomized;

#define EXPECT_ERROR(stmt, needle)                                              \
  do {                                                                          \
    const std::string e_ = testing::error_of([&] { (void)(stmt); });                     \
    EXPECT_NE(e_.find(needle), std::string::npos) << "expected '" << (needle) << "' in: " << e_; \
  } while (0)


// Random weights of a tiny SD1-like model (8 heads, context 768 as SD1), the
// module names being the checkpoint names.
struct Tiny {
  StateDict unet, vae, te;
};

SdUNetConfig tiny_unet_config(int64_t in_channels = 4) {
  SdUNetConfig c = SdUNetConfig::preset("sd1");
  c.in_channels = in_channels;
  c.height = c.width = 8;
  c.model_channels = 32;
  c.channel_mult = {1, 2};
  c.num_res_blocks = 1;
  c.attention_resolutions = {1, 2};
  c.transformer_depth = {1, 1};
  return c;
}

AutoencoderKLConfig tiny_vae_config() {
  AutoencoderKLConfig c;
  c.ch = 32;
  c.ch_mult = {1, 2};
  c.num_res_blocks = 1;
  return c;
}

Tiny make_tiny(uint64_t seed, int64_t in_channels = 4) {
  torch::manual_seed(seed);
  Tiny t;
  auto unet = make_sd_unet(tiny_unet_config(in_channels));
  t.unet = randomized(*unet, 0.08);
  AutoencoderKL vae(tiny_vae_config());
  t.vae = randomized(*vae, 0.08);
  t.te = random_clip(768, 0, "quick_gelu");
  return t;
}

void save(const std::string& path, const StateDict& sd, const std::string& prefix = "") {
  std::vector<std::pair<std::string, torch::Tensor>> v;
  for (auto& [k, t] : sd) v.emplace_back(prefix + k, t);
  save_safetensors(path, v);
}

// The LDM single-file layout.
std::string write_ldm(const Tiny& t, const std::string& name) {
  const std::string path = ::testing::TempDir() + "/" + name + ".safetensors";
  std::vector<std::pair<std::string, torch::Tensor>> v;
  for (auto& [k, x] : t.unet) v.emplace_back("model.diffusion_model." + k, x);
  for (auto& [k, x] : t.vae) v.emplace_back("first_stage_model." + k, x);
  for (auto& [k, x] : t.te) v.emplace_back("cond_stage_model.transformer." + k, x);
  save_safetensors(path, v);
  return path;
}

void copy_file(const std::string& from, const std::string& to) { write_file_atomic(to, read_file(from)); }

// The diffusers folder layout of the same weights.
std::string write_diffusers(const Tiny& t, const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/" + name;
  for (const char* sub : {"", "/unet", "/vae", "/text_encoder", "/tokenizer", "/scheduler"}) ::mkdir((dir + sub).c_str(), 0755);
  write_file_atomic(dir + "/model_index.json", R"({"_class_name": "StableDiffusionPipeline"})");
  save(dir + "/unet/diffusion_pytorch_model.safetensors", ldm_unet_to_diffusers(t.unet, "unet"));
  save(dir + "/vae/diffusion_pytorch_model.safetensors", ldm_vae_to_diffusers(t.vae, "vae"));
  save(dir + "/text_encoder/model.safetensors", t.te);
  copy_file(kTokenizer + "/vocab.json", dir + "/tokenizer/vocab.json");
  copy_file(kTokenizer + "/merges.txt", dir + "/tokenizer/merges.txt");
  write_file_atomic(dir + "/scheduler/scheduler_config.json",
                    R"({"prediction_type": "epsilon", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"})");
  return dir;
}

// One tiny SD1 model shared by the tests (written once).
const std::string& tiny_ldm() {
  static const std::string path = write_ldm(make_tiny(1), "tiny_sd1");
  return path;
}

SdPipelineOptions with_tokenizer() {
  SdPipelineOptions o;
  o.tokenizer = kTokenizer;
  return o;
}

SdRequest small_request() {
  SdRequest r;
  r.prompt = "a photo of a (cat:1.2)";
  r.negative = "blurry";
  r.width = r.height = 16;
  r.steps = 3;
  r.sampler = "dpmpp-2m";
  r.cfg = 5;
  r.seed = 7;
  return r;
}

// SDXL in its real single-file layout: the UNet with label_emb (y of 2816 =
// pooled 1280 + 6 x 256), CLIP-L (HF names) and OpenCLIP-bigG (OpenCLIP names).
TEST(SdPipeline, SdxlSingleFileWithOpenClipRunsEndToEnd) {
  torch::manual_seed(21);
  SdUNetConfig uc = SdUNetConfig::preset("sdxl");
  uc.height = uc.width = 8;
  uc.model_channels = 64;
  uc.channel_mult = {1, 2};
  uc.num_res_blocks = 1;
  uc.attention_resolutions = {2};
  uc.transformer_depth = {0, 2};
  auto unet = make_sd_unet(uc);
  AutoencoderKL vae(tiny_vae_config());
  std::vector<std::pair<std::string, torch::Tensor>> v;
  for (auto& [k, x] : randomized(*unet, 0.05)) v.emplace_back("model.diffusion_model." + k, x);
  for (auto& [k, x] : randomized(*vae, 0.08)) v.emplace_back("first_stage_model." + k, x);
  for (auto& [k, x] : random_clip(768, 0, "quick_gelu")) v.emplace_back("conditioner.embedders.0.transformer." + k, x.to(torch::kHalf));
  for (auto& [k, x] : hf_to_openclip(random_clip(1280, 1280, "gelu")))
    v.emplace_back("conditioner.embedders.1.model." + k, x.to(torch::kHalf));
  const std::string path = ::testing::TempDir() + "/tiny_sdxl.safetensors";
  save_safetensors(path, v);
  StableDiffusion sd(path, with_tokenizer());
  EXPECT_EQ(sd.family(), "sdxl");
  Cond c = sd.encode_prompt("a lighthouse", 1, 16, 16);
  EXPECT_EQ(c.context.sizes(), (std::vector<int64_t>{1, 77, 2048}));
  EXPECT_EQ(c.extra.at("y").sizes(), (std::vector<int64_t>{1, 2816}));
  SdRequest r = small_request();
  auto z = sd_generate_latents(sd, r);
  EXPECT_EQ(z.sizes(), (std::vector<int64_t>{1, 4, 8, 8}));
  EXPECT_TRUE(torch::isfinite(z).all().item<bool>());
  // The size conditioning reaches the UNet through y.
  SdRequest big = r;
  big.width = big.height = 32;
  EXPECT_FALSE(torch::allclose(sd.encode_prompt("a lighthouse", 1, 32, 32).extra.at("y"), c.extra.at("y")));
}

TEST(SdPipeline, LdmFileAndDiffusersFolderGiveIdenticalImages) {
  const Tiny t = make_tiny(1);
  StableDiffusion a(tiny_ldm(), with_tokenizer());
  StableDiffusion b(write_diffusers(t, "tiny_sd1_diffusers"));
  EXPECT_EQ(a.family(), "sd1");
  EXPECT_EQ(b.family(), "sd1");
  const SdRequest r = small_request();
  auto xa = sd_generate(a, r), xb = sd_generate(b, r);
  ASSERT_EQ(xa.sizes(), (std::vector<int64_t>{1, 3, 16, 16}));
  EXPECT_TRUE(torch::isfinite(xa).all().item<bool>());
  EXPECT_TRUE(torch::equal(xa, xb));
  EXPECT_LE(xa.abs().max().item<double>(), 1.0);
  // The same VAE given as a separate file (--vae), in diffusers names.
  const std::string vae = ::testing::TempDir() + "/tiny_vae.safetensors";
  save(vae, ldm_vae_to_diffusers(t.vae, "vae"));
  SdPipelineOptions o = with_tokenizer();
  o.vae = vae;
  StableDiffusion c(tiny_ldm(), o);
  EXPECT_TRUE(torch::equal(xa, sd_generate(c, r)));
}

TEST(SdPipeline, SeedsBatchesAndPromptsDetermineTheResult) {
  StableDiffusion sd(tiny_ldm(), with_tokenizer());
  SdRequest r = small_request();
  auto x = sd_generate_latents(sd, r);
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{1, 4, 8, 8}));
  EXPECT_TRUE(torch::equal(x, sd_generate_latents(sd, r)));  // same seed, same bits
  r.seed = 8;
  EXPECT_FALSE(torch::allclose(x, sd_generate_latents(sd, r)));
  r.seed = 7;
  r.prompt = "a photo of a dog";
  EXPECT_FALSE(torch::allclose(x, sd_generate_latents(sd, r)));
  r.batch = 2;
  EXPECT_EQ(sd_generate_latents(sd, r).size(0), 2);
  // A prompt over 75 tokens (two windows with CLIP's vocabulary, more with
  // the stand-in's one token per letter) against a short negative prompt:
  // the contexts are padded to the same length.
  std::string longp;
  for (int i = 0; i < 90; ++i) longp += "word ";
  const int64_t tokens = int64_t(ClipTokenizer(kTokenizer).encode(longp).size());
  const int64_t windows = (tokens + 74) / 75;
  ASSERT_GE(windows, 2);
  auto [c, n] = sd.encode_prompts(longp, "", 1, 16, 16);
  EXPECT_EQ(c.context.size(1), 77 * windows);
  EXPECT_EQ(n.context.size(1), 77 * windows);
  r.prompt = longp;
  r.batch = 1;
  EXPECT_TRUE(torch::isfinite(sd_generate_latents(sd, r)).all().item<bool>());
}

TEST(SdPipeline, GuidanceRulesComposeWithThePromptCFG) {
  StableDiffusion sd(tiny_ldm(), with_tokenizer());
  SdRequest r = small_request();
  const auto plain = sd_generate_latents(sd, r);
  // A CFG interval that holds no level of the schedule is one conditional evaluation per step:
  // the cfg = 1 result, bit for bit; the whole range is plain CFG.
  r.guidance.set("guidance-interval", "1e6,1e7");
  auto off = sd_generate_latents(sd, r);
  SdRequest one = small_request();
  one.cfg = 1;
  EXPECT_TRUE(torch::equal(off, sd_generate_latents(sd, one)));
  r.guidance.set("guidance-interval", "0,inf");
  EXPECT_TRUE(torch::equal(sd_generate_latents(sd, r), plain));
  // PAG and SAG on the SD UNet's middle self-attention, CFG-rescale: each changes the result, finitely;
  // at scale 0 they are not built.
  for (auto rule : {"pag", "sag", "rescale"}) {
    SdRequest q = small_request();
    if (std::string(rule) == "pag") q.guidance.set("pag", 2);
    if (std::string(rule) == "sag") q.guidance.set("sag", 1);
    if (std::string(rule) == "rescale") q.guidance.set("cfg-rescale", 0.7);
    auto x = sd_generate_latents(sd, q);
    EXPECT_TRUE(torch::isfinite(x).all().item<bool>()) << rule;
    EXPECT_GT((x - plain).abs().max().item<double>(), 1e-4) << rule;
  }
  SdRequest z = small_request();
  z.guidance.set("pag", 0).set("sag", 0);
  EXPECT_TRUE(torch::equal(sd_generate_latents(sd, z), plain));
  SdRequest n = small_request();
  n.guidance.set("negative-class", "3");
  EXPECT_ERROR(sd_generate_latents(sd, n), "negative prompt, not a negative class");
  z.guidance.set("pag", 1);
  z.guidance.set("pag-sites", "middle_block.1.transformer_blocks.0.attn2");  // cross-attention: not perturbable
  EXPECT_THROW(sd_generate_latents(sd, z), Error);
}

TEST(SdPipeline, Img2ImgAtStrengthZeroReturnsTheInitLatents) {
  StableDiffusion sd(tiny_ldm(), with_tokenizer());
  torch::manual_seed(3);
  SdRequest r = small_request();
  r.init = torch::rand({1, 3, 16, 16}) * 2 - 1;
  r.strength = 0;
  EXPECT_TRUE(torch::allclose(sd_generate_latents(sd, r), sd.encode_images(r.init), 0, 0));
  r.strength = 0.5;
  auto half = sd_generate_latents(sd, r);
  EXPECT_TRUE(torch::isfinite(half).all().item<bool>());
  EXPECT_FALSE(torch::allclose(half, sd.encode_images(r.init)));
  r.strength = 1.5;
  EXPECT_ERROR(sd_generate_latents(sd, r), "strength must be in [0, 1]");
}

TEST(SdPipeline, BlendedInpaintingKeepsTheUnmaskedLatentsExactly) {
  StableDiffusion sd(tiny_ldm(), with_tokenizer());
  torch::manual_seed(4);
  SdRequest r = small_request();
  r.init = torch::rand({1, 3, 16, 16}) * 2 - 1;
  r.mask = torch::zeros({1, 1, 16, 16});
  r.mask.slice(2, 4, 10).slice(3, 6, 12).fill_(1);  // repaint this box
  r.strength = 1;
  auto z = sd_generate_latents(sd, r), z0 = sd.encode_images(r.init);
  // Latent pixels with no repainted image pixel: rows 0-1 and 5-7, columns 0-2 and 6-7.
  auto keep = torch::ones({8, 8});
  keep.slice(0, 2, 5).slice(1, 3, 6).fill_(0);
  EXPECT_LT(((z - z0) * keep).abs().max().item<double>(), 1e-6);
  EXPECT_GT(((z - z0) * (1 - keep)).abs().max().item<double>(), 1e-2);
  SdRequest bad = small_request();
  bad.mask = r.mask;
  EXPECT_ERROR(sd_generate_latents(sd, bad), "a mask needs an init image");
}

TEST(SdPipeline, NineChannelInpaintingModelsTakeTheMaskedImage) {
  const std::string path = write_ldm(make_tiny(5, 9), "tiny_sd1_inpaint");
  StableDiffusion sd(path, with_tokenizer());
  EXPECT_TRUE(sd.checkpoint().inpainting);
  SdRequest r = small_request();
  EXPECT_ERROR(sd_generate_latents(sd, r), "is an inpainting model: give --init and --mask");
  torch::manual_seed(6);
  r.init = torch::rand({1, 3, 16, 16}) * 2 - 1;
  r.mask = torch::zeros({1, 1, 16, 16});
  r.mask.slice(2, 0, 8).fill_(1);
  auto z = sd_generate_latents(sd, r);
  EXPECT_EQ(z.sizes(), (std::vector<int64_t>{1, 4, 8, 8}));
  EXPECT_TRUE(torch::isfinite(z).all().item<bool>());
  // The masked image reaches the network: another init image changes the result.
  SdRequest r2 = r;
  r2.init = -r.init;
  EXPECT_FALSE(torch::allclose(z, sd_generate_latents(sd, r2)));
}

TEST(SdPipeline, InstructPix2PixModelsTakeTheImageAndGuideTowardBoth) {
  const std::string path = write_ldm(make_tiny(7, 8), "tiny_sd1_ip2p");
  StableDiffusion sd(path, with_tokenizer());
  EXPECT_EQ(sd.checkpoint().unet_config.in_channels, 8);
  EXPECT_FALSE(sd.checkpoint().inpainting);
  SdRequest r = small_request();
  EXPECT_ERROR(sd_generate_latents(sd, r), "is an InstructPix2Pix model: give --init (the image to edit) and no mask");
  torch::manual_seed(8);
  r.init = torch::rand({1, 3, 16, 16}) * 2 - 1;
  // The rule is the dual formula on three separate network calls.
  auto [c, n] = sd.encode_prompts(r.prompt, r.negative, 1, 16, 16);
  const auto image = sd.encode_images(r.init) / sd.checkpoint().vae_config.scaling_factor;
  c.extra["c_concat"] = image;
  n.extra["c_concat"] = image.clone();
  Cond u = n;
  u.extra["c_concat"] = torch::zeros_like(image);
  auto den = sd.denoiser();
  torch::NoGradGuard ng;
  const auto x = torch::randn({1, 4, 8, 8}) * 5;
  const double s = 3;
  const auto x0c = den->predict(x, s, c).x0(), x0i = den->predict(x, s, n).x0(), x0u = den->predict(x, s, u).x0();
  InstructPix2PixGuidance g(den, 7.0, 1.5, [n = n](const Cond&) { return n; }, [u](const Cond&) { return u; });
  const auto want = x0u + (x0i - x0u) * 1.5 + (x0c - x0i) * 7.0;
  EXPECT_LT((g.predict(x, s, c).x0() - want).abs().max().item<double>(), 1e-4);
  // The pipeline: the image reaches the network, and the image scale (1.5 unless given) matters.
  const auto z = sd_generate_latents(sd, r);
  EXPECT_EQ(z.sizes(), (std::vector<int64_t>{1, 4, 8, 8}));
  EXPECT_TRUE(torch::isfinite(z).all().item<bool>());
  SdRequest other = r;
  other.init = -r.init;
  EXPECT_FALSE(torch::allclose(z, sd_generate_latents(sd, other)));
  SdRequest given = r;
  given.guidance.set("image-cfg", 1.5);
  EXPECT_TRUE(torch::equal(z, sd_generate_latents(sd, given)));
  given.guidance.set("image-cfg", 1.0);
  EXPECT_FALSE(torch::allclose(z, sd_generate_latents(sd, given)));
  // A plain model has no image branch.
  StableDiffusion plain(write_ldm(make_tiny(5), "tiny_sd1_plain_ip2p"), with_tokenizer());
  SdRequest p = small_request();
  p.guidance.set("image-cfg", 2.0);
  EXPECT_ERROR(sd_generate_latents(plain, p), "--image-cfg needs an InstructPix2Pix model");
  // On the command line: --image-cfg, and --strength refused.
  const std::string in = ::testing::TempDir() + "/ip2p_in.png", out = ::testing::TempDir() + "/ip2p_out.png";
  write_png(in, tensor_to_image(r.init[0]));
  const std::string cmd = "generate -q -m " + path + " --tokenizer " + kTokenizer + " -p \"make it blue\" --init " + in +
                          " -s 2 -o " + out;
  auto run = testing::cli(cmd + " --image-cfg 1.2");
  ASSERT_EQ(run.code, 0) << run.out;
  EXPECT_EQ(read_png(out).width, 16);
  testing::expect_error(cmd + " --strength 0.5", "--strength does not apply to InstructPix2Pix models");
}

TEST(SdPipeline, LoraMergedEqualsLoraAtRunTime) {
  torch::manual_seed(11);
  StateDict lora;
  auto add = [&](const std::string& m, int64_t out, int64_t in, double alpha) {
    lora[m + ".lora_down.weight"] = torch::randn({2, in}) * 0.3;
    lora[m + ".lora_up.weight"] = torch::randn({out, 2}) * 0.3;
    lora[m + ".alpha"] = torch::tensor(alpha);
  };
  add("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q", 32, 32, 1);
  add("lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k", 32, 768, 2);
  add("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 768, 768, 2);
  const std::string file = ::testing::TempDir() + "/tiny_lora.safetensors";
  save(file, lora);
  SdPipelineOptions merged = with_tokenizer(), runtime = with_tokenizer();
  merged.loras = runtime.loras = {{file, 0.8}};
  runtime.merge_loras = false;
  StableDiffusion base(tiny_ldm(), with_tokenizer()), m(tiny_ldm(), merged), rt(tiny_ldm(), runtime);
  const SdRequest r = small_request();
  auto zb = sd_generate_latents(base, r), zm = sd_generate_latents(m, r), zr = sd_generate_latents(rt, r);
  EXPECT_TRUE(torch::allclose(zm, zr, 1e-4, 1e-5)) << (zm - zr).abs().max().item<double>();
  EXPECT_FALSE(torch::allclose(zm, zb, 1e-3, 1e-3));
  rt.unmerge_loras();
  EXPECT_TRUE(torch::allclose(sd_generate_latents(rt, r), zb, 1e-4, 1e-5));
}

TEST(SdPipeline, Bf16StaysCloseToFloat32) {
  SdPipelineOptions o = with_tokenizer();
  StableDiffusion f(tiny_ldm(), o);
  o.dtype = torch::kBFloat16;
  StableDiffusion b(tiny_ldm(), o);
  SdRequest r = small_request();
  r.sampler = "ddim";
  auto zf = sd_generate_latents(f, r), zb = sd_generate_latents(b, r);
  const double rel = ((zf - zb).norm() / zf.norm()).item<double>();
  EXPECT_LT(rel, 0.05);
  auto xf = f.decode_latents(zf), xb = b.decode_latents(zf);
  EXPECT_LT(((xf - xb).norm() / xf.norm()).item<double>(), 0.05);
}

TEST(SdPipeline, GenerateCommandWritesA1111Parameters) {
  const std::string out = testing::tmp("sd_generate.png");
  auto r = testing::cli("generate -m " + tiny_ldm() + " --tokenizer " + kTokenizer +
                    " -p \"a cat\" --negative-prompt \"ugly\" --steps 2 --cfg 4 -W 16 -H 16 --seed 3 -q -o " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  Image img = read_png(out);
  EXPECT_EQ(img.width, 16);
  EXPECT_EQ(img.height, 16);
  const std::string p = img.text["parameters"];
  EXPECT_EQ(p.rfind("a cat\nNegative prompt: ugly\nSteps: 2, Sampler: dpmpp-2m, Schedule type: karras, CFG scale: 4, Seed: 3, Size: 16x16", 0), 0u) << p;
  // Guidance rules beyond CFG run and are named in the parameters.
  r = testing::cli("generate -m " + tiny_ldm() + " --tokenizer " + kTokenizer +
                   " -p \"a cat\" --steps 2 --cfg 4 -W 16 -H 16 --pag 1 --sag 0.5 --cfg-rescale 0.7 -q -o " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string pg = read_png(out).text["parameters"];
  EXPECT_NE(pg.find("Guidance: \"cfg 4, rescale 0.7, SAG 0.5, PAG 1\""), std::string::npos) << pg;
  EXPECT_EQ(p.find("Guidance"), std::string::npos) << p;  // plain CFG: no extra field
  // Two runs of two images: four numbered files.
  const std::string many = testing::tmp("sd_many.png");
  r = testing::cli("generate -m " + tiny_ldm() + " --tokenizer " + kTokenizer +
               " -p cat --steps 1 -W 16 -H 16 -b 2 --batch-size 2 -q -o " + many);
  ASSERT_EQ(r.code, 0) << r.out;
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(testing::exists(testing::tmp("sd_many_" + std::to_string(i) + ".png"))) << i;
}

TEST(SdPipeline, GenerateCommandRejectsBadInput) {
  const std::string m = " -m " + tiny_ldm() + " --tokenizer " + kTokenizer + " -W 16 -H 16 --steps 1 -q";
  const std::string out = testing::tmp("sd_bad.png");
  ::setenv("TWEEDIE_TEXT_MODEL", "/nonexistent/model.safetensors", 1);  // without -m: the default model, here missing
  testing::expect_error("generate -p cat -o " + out, "default model /nonexistent/model.safetensors is missing", out);
  ::unsetenv("TWEEDIE_TEXT_MODEL");
  testing::expect_error("generate" + m + " -p cat --strength 2 --init x.png -o " + out, "--strength must be in [0, 1]", out);
  testing::expect_error("generate" + m + " -p cat -W 18 -o " + out, "must be a positive multiple of 4", out);
  testing::expect_error("generate" + m + " -p cat --mask m.png -o " + out, "--mask needs --init", out);
  testing::expect_error("generate" + m + " -p cat --lora /nonexistent.safetensors:0.5 -o " + out, "/nonexistent.safetensors", out);
  testing::expect_error("generate -m " + tiny_ldm() + " -p cat -q -o " + out, "pass --tokenizer DIR", out);
  testing::expect_error("generate" + m + " -p cat -o out.jpg", "--output must end in .png");
  testing::expect_error("generate" + m + " -p cat --seed -3 -o " + out, "--seed must be >= 0", out);
  testing::expect_error("generate" + m + " -p cat --seed abc -o " + out, "--seed expects an integer", out);
  testing::expect_error("generate" + m + " -p cat --pag 1 --pag-sites nowhere.attn1 -o " + out, "nowhere.attn1", out);
  testing::expect_error("generate" + m + " -p cat --cfg 1 --cfg-rescale 0.5 -o " + out,
                        "--cfg-rescale has no effect without guidance", out);
  testing::expect_error("generate" + m + " -p cat --sag-site x -o " + out, "--sag-site needs --sag", out);
  testing::expect_error("generate" + m + " -p cat --negative-class 2 -o " + out, "unknown option", out);
}

TEST(SdPipeline, ForwardCommandMatchesTheLibrary) {
  StableDiffusion sd(tiny_ldm(), with_tokenizer());
  torch::manual_seed(12);
  auto x = torch::randn({2, 4, 8, 8}), ctx = torch::randn({1, 77, 768}), img = torch::rand({1, 3, 16, 16}) * 2 - 1;
  const std::string xf = testing::tmp("fw_x.npy"), cf = testing::tmp("fw_c.npy"), imf = testing::tmp("fw_img.npy"),
                    out = testing::tmp("fw_out.npy");
  save_npy(xf, x);
  save_npy(cf, ctx);
  save_npy(imf, img);
  const std::string m = "forward -m " + tiny_ldm() + " --tokenizer " + kTokenizer;
  auto r = testing::cli(m + " --component unet -i " + xf + " -t 500 --context " + cf + " -o " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  Cond c;
  c.context = ctx;
  torch::NoGradGuard ng;
  auto want = sd.denoiser()->network().forward(x, torch::full({2}, 500.0), c);
  EXPECT_TRUE(torch::allclose(load_npy(out), want, 1e-5, 1e-6));
  r = testing::cli(m + " --component text -p \"a (cat:1.3)\" -o " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  auto text = load_npy(out), text_want = sd.encode_prompt("a (cat:1.3)", 1, 16, 16).context;
  EXPECT_TRUE(torch::allclose(text, text_want, 1e-4, 1e-5)) << (text - text_want).abs().max().item<double>();
  r = testing::cli(m + " --component vae-encode -i " + imf + " -o " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  auto raw = load_npy(out);
  EXPECT_TRUE(torch::allclose(raw * sd.checkpoint().vae_config.scaling_factor, sd.encode_images(img), 1e-5, 1e-6));
  r = testing::cli(m + " --component vae-decode -i " + out + " -o " + xf);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(load_npy(xf).sizes(), img.sizes());
  testing::expect_error(m + " --component unet -i " + imf + " -t 1 --context " + cf + " -o " + out, "the UNet takes 4 channels");
  testing::expect_error(m + " --component decoder -o " + out, "--component must be unet, text, vae-encode or vae-decode");
}

}  // namespace
}  // namespace tweedie
