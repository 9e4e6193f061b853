// Checkpoint formats for Stable Diffusion: ZIP reader/writer, the safe
// unpickler (torch.save files, real and hand-made, malicious and malformed),
// load_state_dict, diffusers <-> LDM key conversion, family detection,
// single-file and diffusers-folder loading, LoRA mapping and merging.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <set>

#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/pickle.h"
#include "tweedie/io/safetensors.h"
#include "tweedie/io/state_dict.h"
#include "tweedie/io/zip.h"
#include "tweedie/models/autoencoder_kl.h"
#include "tweedie/models/sd_checkpoint.h"
#include "tweedie/models/sd_lora.h"
#include "tweedie/models/sd_unet.h"

using namespace tweedie;
using tweedie::testing::error_of;

namespace {

std::string tmp(const std::string& n) { return ::testing::TempDir() + "/sdck_" + n; }
bool exists(const std::string& path) { return bool(std::ifstream(path)); }

#define EXPECT_ERROR(stmt, needle)                                                   \
  do {                                                                               \
    const std::string e_ = error_of([&] { stmt; });                                  \
    EXPECT_NE(e_.find(needle), std::string::npos) << "error '" << e_ << "' lacks '" << (needle) << "'"; \
  } while (0)

bool same(const torch::Tensor& a, const torch::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() && torch::equal(a, b);
}

void expect_same_dicts(const StateDict& a, const StateDict& b) {
  ASSERT_EQ(a.size(), b.size());
  for (auto& [k, v] : a) {
    auto it = b.find(k);
    ASSERT_NE(it, b.end()) << "missing " << k;
    EXPECT_TRUE(same(v, it->second)) << k;
  }
}

// Each (LDM name, diffusers name) pair is present and holds the same tensor.
void expect_pairs(const StateDict& ldm, const StateDict& diff, const std::vector<std::pair<std::string, std::string>>& pairs) {
  for (auto& [l, d] : pairs) {
    ASSERT_TRUE(ldm.count(l)) << l;
    ASSERT_TRUE(diff.count(d)) << d;
    EXPECT_TRUE(same(diff.at(d), ldm.at(l))) << l << " <-> " << d;
  }
}

// A torch.save-style archive with a hand-written pickle and the given storages.
void write_torch_zip(const std::string& path, const std::string& pickle,
                     const std::vector<std::pair<std::string, std::string>>& storages = {}) {
  ZipWriter z(path);
  z.add("archive/data.pkl", pickle);
  for (auto& [k, bytes] : storages) z.add("archive/data/" + k, bytes);
  z.finish();
}

std::string entry_bytes(const std::string& zip_path, const std::string& name) {
  ZipReader r(zip_path);
  const ZipEntry* e = r.find(name);
  EXPECT_NE(e, nullptr) << name;
  return e ? std::string(r.read(*e, true).view()) : std::string();
}

std::string replace_once(std::string s, const std::string& from, const std::string& to) {
  const size_t p = s.find(from);
  EXPECT_NE(p, std::string::npos) << "pattern not found";
  if (p != std::string::npos) s.replace(p, from.size(), to);
  return s;
}

// ------------------------------------------------------------------ key sets from the LDM naming rules

struct TinyUnet {
  int64_t in = 4, out = 4, mc = 32, n = 1, ctx = 768, adm = 0;
  std::vector<int64_t> mult{1, 2};
  std::vector<int64_t> depth{1, 1};  // per level, 0 = no attention
  int64_t mid_depth = 1;
  bool linear = false;
};

using Shapes = std::map<std::string, std::vector<int64_t>>;

void resblock(Shapes& s, const std::string& p, int64_t cin, int64_t cout, int64_t temb) {
  s[p + "in_layers.0.weight"] = s[p + "in_layers.0.bias"] = {cin};
  s[p + "in_layers.2.weight"] = {cout, cin, 3, 3};
  s[p + "in_layers.2.bias"] = {cout};
  s[p + "emb_layers.1.weight"] = {cout, temb};
  s[p + "emb_layers.1.bias"] = {cout};
  s[p + "out_layers.0.weight"] = s[p + "out_layers.0.bias"] = {cout};
  s[p + "out_layers.3.weight"] = {cout, cout, 3, 3};
  s[p + "out_layers.3.bias"] = {cout};
  if (cin != cout) {
    s[p + "skip_connection.weight"] = {cout, cin, 1, 1};
    s[p + "skip_connection.bias"] = {cout};
  }
}

void transformer(Shapes& s, const std::string& p, int64_t c, int64_t depth, const TinyUnet& u) {
  const std::vector<int64_t> proj = u.linear ? std::vector<int64_t>{c, c} : std::vector<int64_t>{c, c, 1, 1};
  s[p + "norm.weight"] = s[p + "norm.bias"] = {c};
  s[p + "proj_in.weight"] = s[p + "proj_out.weight"] = proj;
  s[p + "proj_in.bias"] = s[p + "proj_out.bias"] = {c};
  for (int64_t d = 0; d < depth; ++d) {
    const std::string b = p + "transformer_blocks." + std::to_string(d) + ".";
    for (const char* a : {"attn1.", "attn2."}) {
      const int64_t kv = std::string(a) == "attn2." ? u.ctx : c;
      s[b + a + "to_q.weight"] = {c, c};
      s[b + a + "to_k.weight"] = s[b + a + "to_v.weight"] = {c, kv};
      s[b + a + "to_out.0.weight"] = {c, c};
      s[b + a + "to_out.0.bias"] = {c};
    }
    s[b + "ff.net.0.proj.weight"] = {8 * c, c};
    s[b + "ff.net.0.proj.bias"] = {8 * c};
    s[b + "ff.net.2.weight"] = {c, 4 * c};
    s[b + "ff.net.2.bias"] = {c};
    for (const char* nrm : {"norm1.", "norm2.", "norm3."}) s[b + nrm + "weight"] = s[b + nrm + "bias"] = {c};
  }
}

// The UNet's parameter names and shapes (CompVis openaimodel.py / SGM).
Shapes ldm_unet_shapes(const TinyUnet& u) {
  Shapes s;
  const int64_t temb = 4 * u.mc;
  s["time_embed.0.weight"] = {temb, u.mc};
  s["time_embed.2.weight"] = {temb, temb};
  s["time_embed.0.bias"] = s["time_embed.2.bias"] = {temb};
  if (u.adm) {
    s["label_emb.0.0.weight"] = {temb, u.adm};
    s["label_emb.0.2.weight"] = {temb, temb};
    s["label_emb.0.0.bias"] = s["label_emb.0.2.bias"] = {temb};
  }
  s["input_blocks.0.0.weight"] = {u.mc, u.in, 3, 3};
  s["input_blocks.0.0.bias"] = {u.mc};
  int64_t k = 1, ch = u.mc;
  std::vector<int64_t> skips{ch};
  const int64_t levels = u.mult.size();
  for (int64_t l = 0; l < levels; ++l) {
    const int64_t out = u.mc * u.mult[l];
    for (int64_t i = 0; i < u.n; ++i, ++k) {
      const std::string p = "input_blocks." + std::to_string(k) + ".";
      resblock(s, p + "0.", ch, out, temb);
      ch = out;
      if (u.depth[l]) transformer(s, p + "1.", ch, u.depth[l], u);
      skips.push_back(ch);
    }
    if (l + 1 < levels) {
      const std::string p = "input_blocks." + std::to_string(k++) + ".0.op.";
      s[p + "weight"] = {ch, ch, 3, 3};
      s[p + "bias"] = {ch};
      skips.push_back(ch);
    }
  }
  resblock(s, "middle_block.0.", ch, ch, temb);
  transformer(s, "middle_block.1.", ch, u.mid_depth, u);
  resblock(s, "middle_block.2.", ch, ch, temb);
  k = 0;
  for (int64_t l = levels - 1; l >= 0; --l) {
    const int64_t out = u.mc * u.mult[l];
    for (int64_t i = 0; i <= u.n; ++i, ++k) {
      const std::string p = "output_blocks." + std::to_string(k) + ".";
      resblock(s, p + "0.", ch + skips.back(), out, temb);
      skips.pop_back();
      ch = out;
      if (u.depth[l]) transformer(s, p + "1.", ch, u.depth[l], u);
      if (l > 0 && i == u.n) {
        const std::string up = p + (u.depth[l] ? "2" : "1") + ".conv.";
        s[up + "weight"] = {ch, ch, 3, 3};
        s[up + "bias"] = {ch};
      }
    }
  }
  s["out.0.weight"] = s["out.0.bias"] = {u.mc};
  s["out.2.weight"] = {u.out, u.mc, 3, 3};
  s["out.2.bias"] = {u.out};
  return s;
}

// The AutoencoderKL's names (CompVis ldm/modules/diffusionmodules/model.py).
Shapes ldm_vae_shapes(int64_t ch, const std::vector<int64_t>& mult, int64_t n, int64_t z) {
  Shapes s;
  auto res = [&](const std::string& p, int64_t cin, int64_t cout) {
    s[p + "norm1.weight"] = s[p + "norm1.bias"] = {cin};
    s[p + "conv1.weight"] = {cout, cin, 3, 3};
    s[p + "conv1.bias"] = s[p + "norm2.weight"] = s[p + "norm2.bias"] = s[p + "conv2.bias"] = {cout};
    s[p + "conv2.weight"] = {cout, cout, 3, 3};
    if (cin != cout) {
      s[p + "nin_shortcut.weight"] = {cout, cin, 1, 1};
      s[p + "nin_shortcut.bias"] = {cout};
    }
  };
  auto mid = [&](const std::string& p, int64_t c) {
    res(p + "mid.block_1.", c, c);
    res(p + "mid.block_2.", c, c);
    s[p + "mid.attn_1.norm.weight"] = s[p + "mid.attn_1.norm.bias"] = {c};
    for (const char* m : {"q", "k", "v", "proj_out"}) {
      s[p + "mid.attn_1." + m + ".weight"] = {c, c, 1, 1};
      s[p + "mid.attn_1." + m + ".bias"] = {c};
    }
  };
  auto conv = [&](const std::string& p, int64_t cout, int64_t cin, int64_t k) {
    s[p + "weight"] = {cout, cin, k, k};
    s[p + "bias"] = {cout};
  };
  const int64_t L = mult.size();
  conv("encoder.conv_in.", ch, 3, 3);
  int64_t c = ch;
  for (int64_t i = 0; i < L; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      res("encoder.down." + std::to_string(i) + ".block." + std::to_string(j) + ".", c, ch * mult[i]);
      c = ch * mult[i];
    }
    if (i + 1 < L) conv("encoder.down." + std::to_string(i) + ".downsample.conv.", c, c, 3);
  }
  mid("encoder.", c);
  s["encoder.norm_out.weight"] = s["encoder.norm_out.bias"] = {c};
  conv("encoder.conv_out.", 2 * z, c, 3);
  conv("quant_conv.", 2 * z, 2 * z, 1);
  conv("post_quant_conv.", z, z, 1);
  c = ch * mult.back();
  conv("decoder.conv_in.", c, z, 3);
  mid("decoder.", c);
  for (int64_t i = L - 1; i >= 0; --i) {
    for (int64_t j = 0; j <= n; ++j) {
      res("decoder.up." + std::to_string(i) + ".block." + std::to_string(j) + ".", c, ch * mult[i]);
      c = ch * mult[i];
    }
    if (i > 0) conv("decoder.up." + std::to_string(i) + ".upsample.conv.", c, c, 3);
  }
  s["decoder.norm_out.weight"] = s["decoder.norm_out.bias"] = {c};
  conv("decoder.conv_out.", 3, c, 3);
  return s;
}

// A Hugging Face CLIP text model's names (tiny: width w, 2 layers).
Shapes hf_clip_shapes(int64_t w, int64_t proj = 0) {
  Shapes s;
  s["text_model.embeddings.token_embedding.weight"] = {50, w};
  s["text_model.embeddings.position_embedding.weight"] = {77, w};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "text_model.encoder.layers." + std::to_string(l) + ".";
    for (const char* q : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      s[p + "self_attn." + q + ".weight"] = {w, w};
      s[p + "self_attn." + q + ".bias"] = {w};
    }
    s[p + "layer_norm1.weight"] = s[p + "layer_norm1.bias"] = s[p + "layer_norm2.weight"] = s[p + "layer_norm2.bias"] = {w};
    s[p + "mlp.fc1.weight"] = {4 * w, w};
    s[p + "mlp.fc1.bias"] = {4 * w};
    s[p + "mlp.fc2.weight"] = {w, 4 * w};
    s[p + "mlp.fc2.bias"] = {w};
  }
  s["text_model.final_layer_norm.weight"] = s["text_model.final_layer_norm.bias"] = {w};
  if (proj) s["text_projection.weight"] = {proj, w};
  return s;
}

StateDict random_dict(const Shapes& s, const std::string& prefix = "") {
  StateDict sd;
  for (auto& [k, shape] : s) sd[prefix + k] = torch::randn(shape);
  return sd;
}

Shapes shapes_of(const StateDict& sd) {
  Shapes s;
  for (auto& [k, v] : sd) s[k] = v.sizes().vec();
  return s;
}

Shapes module_shapes(torch::nn::Module& m) {
  Shapes s;
  for (auto& p : m.named_parameters()) s[p.key()] = p.value().sizes().vec();
  return s;
}

StateDict with_prefix(const StateDict& sd, const std::string& p) {
  StateDict out;
  for (auto& [k, v] : sd) out[p + k] = v;
  return out;
}

void merge_into(StateDict& a, const StateDict& b) {
  for (auto& [k, v] : b) a[k] = v;
}

// HF CLIP text names -> OpenCLIP's (the layout of SD2 / SDXL single files), the inverse of openclip_to_hf.
StateDict ldm_openclip_from_hf(const StateDict& hf) {
  StateDict o;
  const std::string L = "text_model.encoder.layers.";
  for (auto& [k, v] : hf) {
    if (k == "text_model.embeddings.token_embedding.weight") o["token_embedding.weight"] = v;
    else if (k == "text_model.embeddings.position_embedding.weight") o["positional_embedding"] = v;
    else if (k.rfind("text_model.final_layer_norm.", 0) == 0) o["ln_final." + k.substr(28)] = v;
    else if (k == "text_projection.weight") o["text_projection"] = v.t().contiguous();
  }
  for (int l = 0; hf.count(L + std::to_string(l) + ".mlp.fc1.weight"); ++l) {
    const std::string h = L + std::to_string(l) + ".", r = "transformer.resblocks." + std::to_string(l) + ".";
    for (const char* w : {"weight", "bias"}) {
      const std::string s = w;
      o[r + "attn.in_proj_" + s] = torch::cat({hf.at(h + "self_attn.q_proj." + s), hf.at(h + "self_attn.k_proj." + s),
                                               hf.at(h + "self_attn.v_proj." + s)});
      o[r + "attn.out_proj." + s] = hf.at(h + "self_attn.out_proj." + s);
      o[r + "ln_1." + s] = hf.at(h + "layer_norm1." + s);
      o[r + "ln_2." + s] = hf.at(h + "layer_norm2." + s);
      o[r + "mlp.c_fc." + s] = hf.at(h + "mlp.fc1." + s);
      o[r + "mlp.c_proj." + s] = hf.at(h + "mlp.fc2." + s);
    }
  }
  o["logit_scale"] = torch::tensor(4.6f);
  return o;
}

TinyUnet tiny_sd1() { return TinyUnet{}; }
TinyUnet tiny_sd2() {
  TinyUnet u;
  u.mc = 64, u.ctx = 1024, u.linear = true;
  return u;
}
TinyUnet tiny_sdxl() {
  TinyUnet u;
  u.mc = 64, u.n = 2, u.ctx = 2048, u.adm = 2816, u.linear = true;
  u.mult = {1, 1, 2};  // SDXL's 3 levels and depths [0, 2, 10], smaller
  u.depth = {0, 2, 3};
  u.mid_depth = 3;
  return u;
}

}  // namespace

// ====================================================================== Zip

TEST(Zip, RoundTripStoredDeflatedAndZip64) {
  std::string big(200000, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = char((i * 7) % 13);  // compressible
  const std::string small = "hello zip";
  for (bool z64 : {false, true}) {
    const std::string path = tmp(z64 ? "z64.zip" : "z32.zip");
    ZipWriter w(path);
    w.add("a/small", small);
    w.add("a/big_deflated", big, true);
    w.add("a/empty", std::string());
    w.add("a/big_stored", big);
    w.finish(z64);
    ZipReader r(path);
    ASSERT_EQ(r.entries().size(), 4u);
    EXPECT_EQ(r.read(*r.find("a/small"), true).view(), small);
    EXPECT_EQ(r.read(*r.find("a/big_deflated")).view(), big);
    EXPECT_EQ(r.find("a/big_deflated")->method, 8);
    EXPECT_LT(r.find("a/big_deflated")->compressed_size, big.size() / 10);
    EXPECT_EQ(r.read(*r.find("a/empty"), true).size, 0u);
    EXPECT_EQ(r.read(*r.find("a/big_stored"), true).view(), big);
    EXPECT_EQ(r.find("a/big_stored")->data_offset % 64, 0u);  // aligned for in-place tensors
    EXPECT_EQ(r.find("nope"), nullptr);
    // ZIP64 records are present exactly when forced (the files are small)
    const std::string bytes = read_file(path);
    EXPECT_EQ(bytes.find(std::string("PK\x06\x06", 4)) != std::string::npos, z64);
  }
}

TEST(Zip, TruncatedCorruptAndOutOfBoundsArchivesAreErrors) {
  const std::string path = tmp("good.zip");
  ZipWriter w(path);
  w.add("x/one", std::string(300, 'a'));
  w.add("x/two", std::string(5000, 'b'), true);
  w.finish();
  const std::string good = read_file(path);
  auto err = [&](const std::string& bytes) {
    write_file_atomic(tmp("bad.zip"), bytes);
    return error_of([&] {
      ZipReader r(tmp("bad.zip"));
      for (auto& e : r.entries()) r.read(e, true);
    });
  };
  EXPECT_NE(err("").find("too short"), std::string::npos);
  EXPECT_NE(err(std::string(100, 'x')).find("not a ZIP archive"), std::string::npos);
  EXPECT_NE(err(good.substr(0, good.size() - 5)).find("no end of central directory"), std::string::npos);
  // Cut out the middle: the central directory offset now points past the end.
  const std::string cut = good.substr(0, 200) + good.substr(good.size() - 150);
  EXPECT_NE(err(cut).find("outside the"), std::string::npos) << err(cut);
  EXPECT_NE(err(cut).find(tmp("bad.zip")), std::string::npos);
  // A local header offset beyond the file.
  const size_t cd = good.find(std::string("PK\x01\x02", 4));
  std::string off = good;
  off[cd + 42] = off[cd + 43] = off[cd + 44] = char(0x7f);
  EXPECT_NE(err(off).find("outside the"), std::string::npos) << err(off);
  // A huge compressed size for the first entry.
  std::string sz = good;
  sz[cd + 22] = sz[cd + 23] = char(0x7f);
  EXPECT_NE(err(sz).find("outside the"), std::string::npos) << err(sz);
  // Deflated data damaged: a CRC or inflate error, never garbage.
  const ZipEntry two = *ZipReader(path).find("x/two");
  std::string dmg = good;
  dmg[two.data_offset + two.compressed_size / 2] ^= 0x55;
  const std::string e = err(dmg);
  EXPECT_TRUE(e.find("CRC mismatch") != std::string::npos || e.find("does not inflate") != std::string::npos) << e;
  // Every single-byte corruption of the central directory and tail: an Error or a clean read, no crash.
  for (size_t i = cd; i < good.size(); ++i) {
    std::string b = good;
    b[i] ^= 0xff;
    err(b);
  }
}

// ====================================================================== Pickle

TEST(Pickle, RoundTripDtypesStridesOffsetsAndSharedStorage) {
  torch::manual_seed(0);
  const torch::Tensor base = torch::randn({24});
  std::vector<std::pair<std::string, torch::Tensor>> ts = {
      {"view", base.slice(0, 2, 14).view({3, 4}).t()},  // non-contiguous, storage offset 2
      {"alias", base.view({4, 6})},                      // the same storage
      {"half", torch::randn({2, 3}).to(torch::kFloat16)},
      {"bf16", torch::randn({5}).to(torch::kBFloat16)},
      {"f64", torch::tensor(3.25, torch::kFloat64)},
      {"ints", torch::arange(7, torch::kInt64)},
      {"empty", torch::zeros({0, 4})},
  };
  for (bool wrap : {false, true}) {
    const std::string path = tmp(wrap ? "wrapped.ckpt" : "plain.pt");
    save_torch_file(path, ts, wrap);
    auto r = load_torch_file(path);
    ASSERT_EQ(r.size(), ts.size());
    for (size_t i = 0; i < ts.size(); ++i) {
      EXPECT_EQ(r[i].first, ts[i].first);  // pickle order
      EXPECT_TRUE(same(r[i].second, ts[i].second)) << ts[i].first;
    }
    EXPECT_EQ(r[0].second.strides(), ts[0].second.strides());
    EXPECT_EQ(r[0].second.storage_offset(), 2);
    EXPECT_EQ(r[0].second.storage().data(), r[1].second.storage().data());  // one storage, written once
    r[0].second.zero_();  // writable (copy-on-write mapping), and the alias sees it
    EXPECT_EQ(r[1].second.view({-1})[2].item<float>(), 0.f);
  }
  EXPECT_EQ(entry_bytes(tmp("plain.pt"), "archive/data/0").size(), 24u * 4);
}

TEST(Pickle, ReadsPythonTorchSave) {
  // tests/data/torch_save_sd.ckpt: written by Python torch 1.13 (tests/data/make_torch_save_fixture.py)
  auto r = load_torch_file(tweedie::testing::source_path("tests/data/torch_save_sd.ckpt"));
  std::map<std::string, torch::Tensor> m(r.begin(), r.end());
  ASSERT_EQ(m.size(), 7u) << "only the state_dict's tensors";
  const auto base = torch::arange(24, torch::kFloat32);
  EXPECT_TRUE(same(m.at("model.diffusion_model.w"), base.slice(0, 2, 14).view({3, 4}).t()));
  EXPECT_TRUE(same(m.at("model.diffusion_model.w_alias"), base.view({4, 6})));
  EXPECT_EQ(m.at("model.diffusion_model.w").storage().data(), m.at("model.diffusion_model.w_alias").storage().data());
  EXPECT_TRUE(same(m.at("first_stage_model.h"), (torch::arange(6, torch::kFloat32) / 4).to(torch::kFloat16).view({2, 3})));
  EXPECT_TRUE(same(m.at("cond_stage_model.b"), (torch::arange(4, torch::kFloat32) - 1.5).to(torch::kBFloat16)));
  EXPECT_TRUE(same(m.at("p"), torch::full({2}, 0.25f)));
  EXPECT_TRUE(same(m.at("i"), torch::arange(3, torch::kInt64)));
  EXPECT_TRUE(same(m.at("scalar"), torch::tensor(7.5, torch::kFloat64)));
}

TEST(Pickle, MaliciousGlobalsAreRefusedAndNothingRuns) {
  const std::string marker = tmp("pwned");
  std::remove(marker.c_str());
  const std::string cmd = "touch " + marker;
  auto binunicode = [](const std::string& s) {
    std::string b = "X";
    for (int i = 0; i < 4; ++i) b.push_back(char((s.size() >> (8 * i)) & 0xff));
    return b + s;
  };
  const std::string arg = binunicode(cmd) + "\x85";  // (cmd,)
  const std::vector<std::pair<std::string, std::string>> cases = {
      {std::string("\x80\x02") + "cos\nsystem\n" + arg + "R.", "refusing to execute pickled code: os.system"},
      {std::string("\x80\x02") + "c__builtin__\neval\n" + binunicode("1") + "\x85R.", "refusing to execute pickled code: builtins.eval"},
      {std::string("\x80\x03") + "cbuiltins\nexec\n" + binunicode("1") + "\x85R.", "builtins.exec"},
      {std::string("\x80\x04\x95\x30\x00\x00\x00\x00\x00\x00\x00", 11) + "\x8c\x05posix\x94\x8c\x06system\x94\x93\x94" + arg + "R.",
       "refusing to execute pickled code: posix.system"},
      {"(S'" + cmd + "'\nisubprocess\ncall\n.", "refusing to execute pickled code: subprocess.call"},
      // hidden inside an otherwise valid state dict
      {std::string("\x80\x02}(") + binunicode("w") + "cos\nsystem\n" + arg + "Ru.", "os.system"},
  };
  for (auto& [pkl, needle] : cases) {
    const std::string path = tmp("evil.ckpt");
    write_torch_zip(path, pkl);
    const std::string e = error_of([&] { load_state_dict(path); });
    EXPECT_NE(e.find(needle), std::string::npos) << e;
    EXPECT_NE(e.find(path), std::string::npos) << "names the file: " << e;
  }
  EXPECT_FALSE(exists(marker));
}

TEST(Pickle, MalformedFilesAreErrorsNotCrashes) {
  const std::string good_path = tmp("good.pt");
  save_torch_file(good_path, {{"w", torch::arange(4, torch::kFloat32)}});
  const std::string pkl = entry_bytes(good_path, "archive/data.pkl");
  const std::string data = entry_bytes(good_path, "archive/data/0");
  const std::string path = tmp("bad.pt");
  auto err = [&](const std::string& p, const std::vector<std::pair<std::string, std::string>>& st) {
    write_torch_zip(path, p, st);
    return error_of([&] { load_state_dict(path); });
  };
  EXPECT_EQ(err(pkl, {{"0", data}}), "");  // the unchanged pickle loads
  EXPECT_NE(err(pkl, {{"7", data}}).find("refers to storage '0' but the archive has no 'archive/data/0'"), std::string::npos);
  EXPECT_NE(err(pkl, {{"0", data.substr(0, 8)}}).find("fewer than its 4 x 4 bytes"), std::string::npos);
  // The storage claims 2 elements; the tensor of 4 needs more: rejected, not read out of bounds.
  const std::string small = replace_once(pkl, std::string("X\x03\x00\x00\x00" "cpuK\x04", 10), std::string("X\x03\x00\x00\x00" "cpuK\x02", 10));
  EXPECT_NE(err(small, {{"0", data}}).find("needs 4 elements but its storage has 2"), std::string::npos) << err(small, {{"0", data}});
  // Every truncation of the pickle is an Error.
  for (size_t n = 0; n < pkl.size(); ++n) EXPECT_NE(err(pkl.substr(0, n), {{"0", data}}), "") << "prefix " << n;
  EXPECT_NE(err(std::string("\x80\x02R.", 4), {}).find("stack underflow"), std::string::npos);
  EXPECT_NE(err(std::string("\x80\x02h\x05.", 5), {}).find("memo key 5"), std::string::npos);
  EXPECT_NE(err(std::string("\x80\x02\xff.", 4), {}).find("unsupported opcode 0xff"), std::string::npos);
  EXPECT_NE(err(std::string("\x80\x02K\x01.", 5), {}).find("not a dict of tensors"), std::string::npos);
  EXPECT_NE(err("\x80\x02" "ctorch._utils\n_rebuild_qtensor\n.", {}).find("unsupported torch object in pickle: torch._utils._rebuild_qtensor"),
            std::string::npos);
  // Legacy (pre-1.6) torch.save files start with a raw pickle.
  write_file_atomic(tmp("legacy.pt"), std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15));
  EXPECT_ERROR(load_state_dict(tmp("legacy.pt")), "legacy (pre-1.6, non-ZIP) torch.save format");
  // A ZIP that is not a torch file.
  ZipWriter z(tmp("other.zip"));
  z.add("readme.txt", std::string("hi"));
  z.finish();
  EXPECT_ERROR(load_state_dict(tmp("other.zip")), "without <name>/data.pkl");
}

// ====================================================================== StateDict

// The header length's low byte is arbitrary in real files (one in 256 has
// 0x80, pickle's PROTO opcode): every one must load as safetensors.
TEST(StateDict, SafetensorsOfEveryHeaderLengthLowByteLoad) {
  const std::string json = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const float values[2] = {1.5f, -2.25f};
  for (int low = 0; low < 256; ++low) {
    const size_t n = 512 + size_t(low);  // >= the JSON's length, low byte = low
    std::string file(8, '\0');
    for (int i = 0; i < 8; ++i) file[size_t(i)] = char((uint64_t(n) >> (8 * i)) & 0xff);
    file += json + std::string(n - json.size(), ' ');
    file.append(reinterpret_cast<const char*>(values), sizeof values);
    const std::string path = tmp("low_byte.safetensors");
    write_file_atomic(path, file);
    ASSERT_EQ((unsigned char)file[0], low);
    EXPECT_EQ(detect_weights_format(path), WeightsFormat::Safetensors) << "low byte " << low;
    StateDict sd;
    const std::string e = error_of([&] { sd = load_state_dict(path); });
    ASSERT_EQ(e, "") << "low byte " << low;
    EXPECT_TRUE(torch::equal(sd.at("w"), torch::tensor({1.5f, -2.25f}))) << "low byte " << low;
  }
  // The other forms by structure: ZIP, legacy pickle, and neither.
  save_torch_file(tmp("zip.pt"), {{"w", torch::ones({2})}});
  EXPECT_EQ(detect_weights_format(tmp("zip.pt")), WeightsFormat::TorchZip);
  write_file_atomic(tmp("legacy2.pt"), std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15));
  EXPECT_EQ(detect_weights_format(tmp("legacy2.pt")), WeightsFormat::TorchLegacy);
  // 0x80 first but no legacy magic, and a length past the end: neither form.
  write_file_atomic(tmp("neither.bin"), std::string("\x80\x02\x00\x00\x00\x00\x00\x00{}", 10));
  EXPECT_EQ(detect_weights_format(tmp("neither.bin")), WeightsFormat::Unknown);
  EXPECT_ERROR(load_state_dict(tmp("neither.bin")), "out of bounds");
  EXPECT_ERROR(load_torch_file(tmp("low_byte.safetensors")), "a safetensors file, not a torch.save file");
}

TEST(StateDict, SafetensorsAndTorchFilesLoadAlikeWithDtypeConversion) {
  torch::manual_seed(1);
  std::vector<std::pair<std::string, torch::Tensor>> ts = {{"a.weight", torch::randn({3, 4})},
                                                           {"b.bias", torch::randn({4}).to(torch::kFloat16)},
                                                           {"c", torch::randn({2}).to(torch::kBFloat16)},
                                                           {"ids", torch::arange(5, torch::kInt64)}};
  save_safetensors(tmp("sd.safetensors"), ts);
  save_torch_file(tmp("sd.ckpt"), ts, true);
  save_safetensors(tmp("misnamed.bin"), ts);  // the content decides, not the extension
  const StateDict a = load_state_dict(tmp("sd.safetensors")), b = load_state_dict(tmp("sd.ckpt")),
                  c = load_state_dict(tmp("misnamed.bin"));
  expect_same_dicts(a, b);
  expect_same_dicts(a, c);
  for (auto& [k, v] : ts) EXPECT_TRUE(same(a.at(k), v)) << k;
  LoadOptions o;
  o.dtype = dtype_from_string("bf16");
  for (auto& sd : {load_state_dict(tmp("sd.safetensors"), o), load_state_dict(tmp("sd.ckpt"), o)}) {
    EXPECT_EQ(sd.at("a.weight").scalar_type(), torch::kBFloat16);
    EXPECT_EQ(sd.at("b.bias").scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(torch::equal(sd.at("a.weight"), ts[0].second.to(torch::kBFloat16)));
    EXPECT_EQ(sd.at("ids").scalar_type(), torch::kInt64);  // integers are kept
  }
  EXPECT_EQ(with_prefix_removed(a, "a.").size(), 1u);
  EXPECT_EQ(describe_keys(a, 2), "4 keys like 'a.weight', 'b.bias', ...");
  EXPECT_ERROR(load_state_dict(::testing::TempDir()), "is a directory");
  EXPECT_ERROR(load_state_dict(tmp("does_not_exist.ckpt")), "cannot open");
  EXPECT_ERROR(dtype_from_string("fp8"), "unknown dtype 'fp8'");
}

// ====================================================================== SdCheckpoint: key conversion

TEST(SdCheckpoint, KeyGeneratorsMatchTheModules) {
  // The test's LDM key sets (from the naming rules) are exactly the modules' parameters.
  for (const TinyUnet& u : {tiny_sd1(), tiny_sd2(), tiny_sdxl()}) {
    SdCheckpoint ck;  // no family yet: detect_sd_family tells it from the UNet
    const Shapes want = ldm_unet_shapes(u);
    detect_sd_family(random_dict(want), "tiny", ck);
    auto net = make_sd_unet(ck.unet_config);
    EXPECT_EQ(module_shapes(*net), want) << ck.family;
  }
  const Shapes vae = ldm_vae_shapes(32, {1, 2}, 1, 4);
  AutoencoderKL m(vae_config_from_weights(random_dict(vae), "tiny vae"));
  EXPECT_EQ(module_shapes(*m), vae);
}

TEST(SdCheckpoint, UnetDiffusersRoundTripAndLiteralNamesSd1) {
  torch::manual_seed(2);
  TinyUnet u = tiny_sd1();  // SD1's structure: 4 levels, 2 resnets, attention on levels 0-2
  u.mult = {1, 2, 4, 4};
  u.n = 2;
  u.depth = {1, 1, 1, 0};
  const StateDict ldm = random_dict(ldm_unet_shapes(u));
  const StateDict diff = ldm_unet_to_diffusers(ldm, "sd1");
  const StateDict back = diffusers_unet_to_ldm(diff, "sd1");
  expect_same_dicts(back, ldm);
  for (auto& [k, v] : back) EXPECT_EQ(v.data_ptr(), ldm.at(k).data_ptr()) << "tensors are shared: " << k;
  // Pairs from diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py (SD1 layout)
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"time_embed.2.bias", "time_embedding.linear_2.bias"},
      {"input_blocks.0.0.weight", "conv_in.weight"},
      {"input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight"},
      {"input_blocks.4.0.skip_connection.weight", "down_blocks.1.resnets.0.conv_shortcut.weight"},
      {"input_blocks.10.0.in_layers.2.weight", "down_blocks.3.resnets.0.conv1.weight"},
      {"input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"},
      {"input_blocks.8.1.proj_in.weight", "down_blocks.2.attentions.1.proj_in.weight"},
      {"middle_block.1.transformer_blocks.0.ff.net.0.proj.weight", "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"},
      {"middle_block.2.emb_layers.1.weight", "mid_block.resnets.1.time_emb_proj.weight"},
      {"output_blocks.0.0.out_layers.3.weight", "up_blocks.0.resnets.0.conv2.weight"},
      {"output_blocks.2.1.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"},
      {"output_blocks.5.2.conv.weight", "up_blocks.1.upsamplers.0.conv.weight"},
      {"output_blocks.8.2.conv.bias", "up_blocks.2.upsamplers.0.conv.bias"},
      {"output_blocks.11.1.proj_out.weight", "up_blocks.3.attentions.2.proj_out.weight"},
      {"output_blocks.3.0.in_layers.0.weight", "up_blocks.1.resnets.0.norm1.weight"},
      {"out.0.weight", "conv_norm_out.weight"},
      {"out.2.weight", "conv_out.weight"}};
  expect_pairs(ldm, diff, pairs);
  StateDict bad = diff;
  bad["down_blocks.0.frobnicate.weight"] = torch::zeros({1});
  EXPECT_ERROR(diffusers_unet_to_ldm(bad, "unet/x.safetensors"), "unexpected diffusers UNet key 'down_blocks.0.frobnicate.weight'");
  StateDict bad2 = ldm;
  bad2["input_blocks.1.0.frobnicate.weight"] = torch::zeros({1});
  EXPECT_ERROR(ldm_unet_to_diffusers(bad2, "m"), "unexpected LDM UNet key 'input_blocks.1.0.frobnicate.weight'");
}

TEST(SdCheckpoint, UnetDiffusersRoundTripSdxlThreeLevels) {
  torch::manual_seed(3);
  const StateDict ldm = random_dict(ldm_unet_shapes(tiny_sdxl()));
  const StateDict diff = ldm_unet_to_diffusers(ldm, "sdxl");
  expect_same_dicts(diffusers_unet_to_ldm(diff, "sdxl"), ldm);
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"label_emb.0.0.weight", "add_embedding.linear_1.weight"},
      {"label_emb.0.2.bias", "add_embedding.linear_2.bias"},
      {"input_blocks.1.0.in_layers.0.weight", "down_blocks.0.resnets.0.norm1.weight"},
      {"input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight"},
      {"input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight", "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight"},
      {"input_blocks.8.1.transformer_blocks.2.norm3.bias", "down_blocks.2.attentions.1.transformer_blocks.2.norm3.bias"},
      {"middle_block.1.transformer_blocks.2.attn1.to_out.0.weight", "mid_block.attentions.0.transformer_blocks.2.attn1.to_out.0.weight"},
      {"output_blocks.2.2.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"},
      {"output_blocks.5.2.conv.weight", "up_blocks.1.upsamplers.0.conv.weight"},
      {"output_blocks.8.0.skip_connection.weight", "up_blocks.2.resnets.2.conv_shortcut.weight"}};
  expect_pairs(ldm, diff, pairs);
  for (auto& [k, v] : diff) EXPECT_EQ(k.find("up_blocks.2.attentions"), std::string::npos) << "no attention on SDXL's top level";
}

TEST(SdCheckpoint, VaeDiffusersRoundTripWithAttentionReshape) {
  torch::manual_seed(4);
  const StateDict ldm = random_dict(ldm_vae_shapes(32, {1, 2, 2}, 1, 4));
  const StateDict diff = ldm_vae_to_diffusers(ldm, "vae");
  expect_same_dicts(diffusers_vae_to_ldm(diff, "vae"), ldm);
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"encoder.down.0.block.0.conv1.weight", "encoder.down_blocks.0.resnets.0.conv1.weight"},
      {"encoder.down.1.block.0.nin_shortcut.weight", "encoder.down_blocks.1.resnets.0.conv_shortcut.weight"},
      {"encoder.down.1.downsample.conv.weight", "encoder.down_blocks.1.downsamplers.0.conv.weight"},
      {"encoder.mid.block_1.norm2.bias", "encoder.mid_block.resnets.0.norm2.bias"},
      {"encoder.norm_out.weight", "encoder.conv_norm_out.weight"},
      {"decoder.up.2.block.1.conv2.weight", "decoder.up_blocks.0.resnets.1.conv2.weight"},
      {"decoder.up.2.upsample.conv.weight", "decoder.up_blocks.0.upsamplers.0.conv.weight"},
      {"decoder.up.0.block.0.nin_shortcut.weight", "decoder.up_blocks.2.resnets.0.conv_shortcut.weight"},
      {"decoder.mid.block_2.conv1.bias", "decoder.mid_block.resnets.1.conv1.bias"},
      {"decoder.mid.attn_1.norm.weight", "decoder.mid_block.attentions.0.group_norm.weight"},
      {"quant_conv.weight", "quant_conv.weight"}};
  expect_pairs(ldm, diff, pairs);
  // attention projections: 1x1 conv [C, C, 1, 1] <-> Linear [C, C]
  const auto& q = diff.at("encoder.mid_block.attentions.0.to_q.weight");
  EXPECT_EQ(q.sizes(), torch::IntArrayRef({64, 64}));
  EXPECT_TRUE(torch::equal(q, ldm.at("encoder.mid.attn_1.q.weight").view({64, 64})));
  EXPECT_TRUE(same(diff.at("decoder.mid_block.attentions.0.to_out.0.bias"), ldm.at("decoder.mid.attn_1.proj_out.bias")));
  // The older diffusers spelling (query/key/value/proj_attn) converts to the same thing.
  StateDict old;
  for (auto& [k, v] : diff) {
    std::string n = k;
    for (auto [a, b] : {std::pair<const char*, const char*>{"to_q.", "query."}, {"to_k.", "key."}, {"to_v.", "value."}, {"to_out.0.", "proj_attn."}}) {
      const size_t p = n.find(a);
      if (p != std::string::npos) n.replace(p, std::strlen(a), b);
    }
    old[n] = v;
  }
  expect_same_dicts(diffusers_vae_to_ldm(old, "old vae"), ldm);
  StateDict bad = diff;
  bad["decoder.up_blocks.0.resnets.0.frob.weight"] = torch::zeros({1});
  EXPECT_ERROR(diffusers_vae_to_ldm(bad, "vae/x"), "unexpected diffusers VAE key 'decoder.up_blocks.0.resnets.0.frob.weight'");
}

TEST(SdCheckpoint, SeparateVaeFilesInEveryLayout) {
  torch::manual_seed(13);
  const StateDict ldm = random_dict(ldm_vae_shapes(32, {1, 2}, 1, 4));
  auto save = [](const std::string& path, const StateDict& sd) {
    save_safetensors(path, std::vector<std::pair<std::string, torch::Tensor>>(sd.begin(), sd.end()));
  };
  save(tmp("vae_ldm.safetensors"), ldm);
  StateDict wrapped = with_prefix(ldm, "first_stage_model.");
  wrapped["first_stage_model.loss.logvar"] = torch::zeros({});  // training-only, dropped
  save_torch_file(tmp("vae_wrapped.ckpt"), std::vector<std::pair<std::string, torch::Tensor>>(wrapped.begin(), wrapped.end()), true);
  ::mkdir(tmp("vae_dir").c_str(), 0755);
  save(tmp("vae_dir") + "/diffusion_pytorch_model.safetensors", ldm_vae_to_diffusers(ldm, "v"));
  for (const std::string p : {tmp("vae_ldm.safetensors"), tmp("vae_wrapped.ckpt"), tmp("vae_dir")}) {
    AutoencoderKLConfig cfg;
    expect_same_dicts(load_sd_vae(p, {}, &cfg), ldm);
    EXPECT_EQ(cfg.ch, 32);
    EXPECT_EQ(cfg.ch_mult, (std::vector<int64_t>{1, 2}));
    EXPECT_EQ(cfg.num_res_blocks, 1);
  }
  save(tmp("not_vae.safetensors"), StateDict{{"x.weight", torch::zeros({1})}});
  EXPECT_ERROR(load_sd_vae(tmp("not_vae.safetensors")), "not a VAE: expected keys encoder.* / decoder.*");
}

// ====================================================================== SdCheckpoint: detection and loading

namespace {

// A single-file checkpoint of a tiny model of the family.
StateDict tiny_single_file(const std::string& family, int64_t in_channels = 4) {
  TinyUnet u = family == "sd1" ? tiny_sd1() : family == "sd2" ? tiny_sd2() : tiny_sdxl();
  u.in = in_channels;
  StateDict sd = random_dict(ldm_unet_shapes(u), "model.diffusion_model.");
  merge_into(sd, random_dict(ldm_vae_shapes(32, {1, 2}, 1, 4), "first_stage_model."));
  if (family == "sd1") merge_into(sd, random_dict(hf_clip_shapes(64), "cond_stage_model.transformer."));
  if (family == "sdxl") {
    merge_into(sd, random_dict(hf_clip_shapes(64), "conditioner.embedders.0.transformer."));
    merge_into(sd, with_prefix(ldm_openclip_from_hf(random_dict(hf_clip_shapes(128, 128))), "conditioner.embedders.1.model."));
  }
  if (family == "sd2") merge_into(sd, with_prefix(ldm_openclip_from_hf(random_dict(hf_clip_shapes(128, 128))), "cond_stage_model.model."));
  sd["alphas_cumprod"] = torch::rand({1000});  // schedule buffers are ignored
  return sd;
}

}  // namespace

TEST(SdCheckpoint, FamilyDetectionFromKeysAndShapes) {
  torch::manual_seed(5);
  struct Case {
    std::string family;
    int64_t in, ctx;
    bool linear;
  };
  for (const Case& c : {Case{"sd1", 4, 768, false}, Case{"sd2", 4, 1024, true}, Case{"sdxl", 4, 2048, true}, Case{"sd1", 9, 768, false},
                      Case{"sd1", 8, 768, false}}) {
    const SdCheckpoint ck = sd_checkpoint_from_state_dict(tiny_single_file(c.family, c.in), "m.safetensors");
    EXPECT_EQ(ck.family, c.family);
    EXPECT_EQ(ck.inpainting, c.in == 9);
    EXPECT_EQ(ck.unet_config.in_channels, c.in);
    EXPECT_EQ(ck.unet_config.context_dim, c.ctx);
    EXPECT_EQ(ck.unet_config.use_linear_in_transformer, c.linear);
    EXPECT_EQ(ck.prediction, "eps");
    EXPECT_EQ(ck.prediction_source, "default");
    EXPECT_EQ(ck.ignored_keys, 1u);  // alphas_cumprod
    EXPECT_DOUBLE_EQ(ck.vae_config.scaling_factor, c.family == "sdxl" ? 0.13025 : 0.18215);
    EXPECT_EQ(ck.vae_config.ch_mult, (std::vector<int64_t>{1, 2}));
    // the config builds a module whose parameters are exactly the checkpoint's UNet keys
    EXPECT_EQ(module_shapes(*make_sd_unet(ck.unet_config)), shapes_of(ck.unet)) << c.family;
  }
  const SdCheckpoint xl = sd_checkpoint_from_state_dict(tiny_single_file("sdxl"), "xl.safetensors");
  EXPECT_EQ(xl.unet_config.adm_in_channels, 2816);
  EXPECT_EQ(xl.unet_config.channel_mult, (std::vector<int64_t>{1, 1, 2}));
  EXPECT_EQ(xl.unet_config.depth_at(0), 0);
  EXPECT_EQ(xl.unet_config.depth_at(1), 2);
  EXPECT_EQ(xl.unet_config.depth_at(2), 3);
  EXPECT_EQ(xl.unet_config.middle_depth(), 3);
  ASSERT_EQ(xl.text_encoders.size(), 2u);
  EXPECT_EQ(xl.text_encoders[0].name, "clip_l");
  EXPECT_EQ(xl.text_encoders[0].config.activation, "quick_gelu");
  EXPECT_EQ(xl.text_encoders[1].name, "openclip_bigg");
  EXPECT_EQ(xl.text_encoders[1].config.width, 128);
  EXPECT_EQ(xl.text_encoders[1].config.projection_dim, 128);
  EXPECT_EQ(xl.text_encoders[1].config.activation, "gelu");

  // SDXL refiner: label_emb [*, 2560] with context 1280 -> a clear refusal
  TinyUnet r = tiny_sdxl();
  r.adm = 2560, r.ctx = 1280;
  EXPECT_ERROR(sd_checkpoint_from_state_dict(random_dict(ldm_unet_shapes(r), "model.diffusion_model."), "refiner.safetensors"),
               "SDXL refiner");
  // Not SD at all
  StateDict other{{"foo.weight", torch::zeros({2})}, {"bar.bias", torch::zeros({2})}};
  EXPECT_ERROR(sd_checkpoint_from_state_dict(other, "model.safetensors"),
               "model.safetensors: not a Stable Diffusion checkpoint: expected keys model.diffusion_model.* (LDM) or a "
               "diffusers folder (model_index.json); found 2 keys like 'bar.bias', 'foo.weight'");
  TinyUnet odd = tiny_sd1();
  odd.ctx = 512;
  EXPECT_ERROR(sd_checkpoint_from_state_dict(random_dict(ldm_unet_shapes(odd), "model.diffusion_model."), "odd.ckpt"),
               "cannot tell the family of a bare UNet with context width 512");
  StateDict no_te = tiny_single_file("sd1");
  for (auto it = no_te.begin(); it != no_te.end();) it = it->first.rfind("cond_stage_model.", 0) == 0 ? no_te.erase(it) : std::next(it);
  EXPECT_ERROR(sd_checkpoint_from_state_dict(no_te, "x.ckpt"), "without its text encoder (expected keys cond_stage_model.transformer.*)");
}

TEST(SdCheckpoint, TextEncodersComeOutInTheHuggingFaceLayout) {
  torch::manual_seed(6);
  // SD1 files from older transformers lack "text_model."; SD2's OpenCLIP is converted.
  StateDict sd1 = tiny_single_file("sd1");
  StateDict old;
  for (auto& [k, v] : sd1) {
    const std::string p = "cond_stage_model.transformer.text_model.";
    old[k.rfind(p, 0) == 0 ? "cond_stage_model.transformer." + k.substr(p.size()) : k] = v;
  }
  const SdCheckpoint a = sd_checkpoint_from_state_dict(sd1, "a.ckpt"), b = sd_checkpoint_from_state_dict(old, "b.ckpt");
  expect_same_dicts(a.text_encoders[0].weights, b.text_encoders[0].weights);
  EXPECT_TRUE(a.text_encoders[0].weights.count("text_model.encoder.layers.1.mlp.fc2.weight"));

  const StateDict hf = random_dict(hf_clip_shapes(128, 128));
  StateDict sd2 = tiny_single_file("sd2");
  for (auto& [k, v] : ldm_openclip_from_hf(hf)) sd2["cond_stage_model.model." + k] = v;
  const SdCheckpoint c = sd_checkpoint_from_state_dict(sd2, "c.ckpt");
  ASSERT_EQ(c.text_encoders.size(), 1u);
  EXPECT_EQ(c.text_encoders[0].name, "openclip_h");
  expect_same_dicts(c.text_encoders[0].weights, hf);  // exactly the HF tensors back
  EXPECT_EQ(c.text_encoders[0].config.layers, 2);
}

TEST(SdCheckpoint, PredictionTypeRules) {
  torch::manual_seed(7);
  const StateDict sd2 = tiny_single_file("sd2");
  const std::string dir = tmp("pred");
  std::remove((dir + "/model.yaml").c_str());
  ::mkdir(dir.c_str(), 0755);
  auto load = [&](const std::string& name, const std::string& option = "", const StateDict& sd = StateDict()) {
    SdLoadOptions o;
    o.prediction = option;
    return sd_checkpoint_from_state_dict(sd.empty() ? sd2 : sd, dir + "/" + name, o);
  };
  SdCheckpoint c = load("model.safetensors");
  EXPECT_EQ(c.prediction, "eps");
  EXPECT_EQ(c.prediction_source, "default");
  EXPECT_EQ(c.unet_config.height, 64);
  c = load("v2-1_768-ema-pruned-768-v.safetensors");
  EXPECT_EQ(c.prediction, "v");
  EXPECT_EQ(c.prediction_source, "file name");
  EXPECT_EQ(c.unet_config.height, 96);  // 768-px model
  StateDict marked = sd2;
  marked["v_pred"] = torch::zeros({0});
  c = load("model.safetensors", "", marked);
  EXPECT_EQ(c.prediction, "v");
  EXPECT_EQ(c.prediction_source, "v_pred key");
  write_file_atomic(dir + "/model.yaml", "model:\n  params:\n    parameterization: \"v\"\n    linear_start: 0.001\n    linear_end: 0.02\n");
  c = load("model.safetensors");
  EXPECT_EQ(c.prediction, "v");
  EXPECT_EQ(c.prediction_source, "model.yaml");
  EXPECT_DOUBLE_EQ(c.schedule.beta_start, 0.001);
  EXPECT_DOUBLE_EQ(c.schedule.beta_end, 0.02);
  c = load("model.safetensors", "eps");  // the user's flag wins
  EXPECT_EQ(c.prediction, "eps");
  EXPECT_EQ(c.prediction_source, "option");
  write_file_atomic(dir + "/model.yaml", "model:\n  params:\n    linear_start: 0.00085\n");
  EXPECT_EQ(load("model-768-v.safetensors").prediction, "v");  // no yaml next to this name
  EXPECT_EQ(load("model.safetensors").prediction, "eps");      // a yaml without parameterization: LDM's eps
  EXPECT_EQ(load("model.safetensors").prediction_source, "model.yaml");
  EXPECT_ERROR(load("model.safetensors", "x0"), "--prediction: expected eps or v, got 'x0'");
}

TEST(SdCheckpoint, SingleFilesLoadFromSafetensorsAndCkptAlike) {
  torch::manual_seed(8);
  const StateDict sd = tiny_single_file("sd1");
  std::vector<std::pair<std::string, torch::Tensor>> v(sd.begin(), sd.end());
  save_safetensors(tmp("one.safetensors"), v);
  save_torch_file(tmp("one.ckpt"), v, true);
  SdLoadOptions o;
  const SdCheckpoint a = load_sd_checkpoint(tmp("one.safetensors"), o), b = load_sd_checkpoint(tmp("one.ckpt"), o);
  expect_same_dicts(a.unet, b.unet);
  expect_same_dicts(a.vae, b.vae);
  expect_same_dicts(a.text_encoders[0].weights, b.text_encoders[0].weights);
  expect_same_dicts(a.unet, with_prefix_removed(sd, "model.diffusion_model."));
  EXPECT_NE(a.describe().find("sd1, prediction eps (default)"), std::string::npos) << a.describe();
  o.dtype = torch::kFloat16;
  const SdCheckpoint h = load_sd_checkpoint(tmp("one.ckpt"), o);
  EXPECT_EQ(h.unet.at("out.2.weight").scalar_type(), torch::kFloat16);
  EXPECT_EQ(h.text_encoders[0].weights.at("text_model.final_layer_norm.weight").scalar_type(), torch::kFloat16);
  // EMA weights (LDM's model_ema.<name without dots>) on request
  StateDict ema = sd;
  for (auto& [k, t] : with_prefix_removed(sd, "model.diffusion_model.")) {
    std::string flat = "diffusion_model." + k;
    flat.erase(std::remove(flat.begin(), flat.end(), '.'), flat.end());
    ema["model_ema." + flat] = t * 2;
  }
  ema["model_ema.decay"] = torch::tensor(0.9999);
  SdLoadOptions e;
  e.use_ema = true;
  const SdCheckpoint ce = sd_checkpoint_from_state_dict(ema, "ema.ckpt", e);
  EXPECT_TRUE(torch::equal(ce.unet.at("out.2.weight"), sd.at("model.diffusion_model.out.2.weight") * 2));
  EXPECT_EQ(ce.ignored_keys, 2u);  // model_ema.decay, alphas_cumprod
  EXPECT_EQ(sd_checkpoint_from_state_dict(ema, "ema.ckpt").ignored_keys, ema.size() - sd.size() + 1);
  EXPECT_ERROR(sd_checkpoint_from_state_dict(sd, "noema.ckpt", e), "--ema: no EMA copy 'model_ema.diffusion_modelinput_blocks00bias' of UNet weight 'input_blocks.0.0.bias'");
}

TEST(SdCheckpoint, DiffusersFolderLoadsToTheLdmLayout) {
  torch::manual_seed(9);
  const std::string dir = tmp("diffusers_sd2");
  for (const char* sub : {"", "/unet", "/vae", "/text_encoder", "/tokenizer", "/scheduler"}) ::mkdir((dir + sub).c_str(), 0755);
  const StateDict unet = random_dict(ldm_unet_shapes(tiny_sd2()));
  const StateDict vae = random_dict(ldm_vae_shapes(32, {1, 2}, 1, 4));
  const StateDict te = random_dict(hf_clip_shapes(128));
  auto save = [](const std::string& path, const StateDict& sd, bool torch_zip) {
    std::vector<std::pair<std::string, torch::Tensor>> v(sd.begin(), sd.end());
    if (torch_zip) save_torch_file(path, v);
    else save_safetensors(path, v);
  };
  write_file_atomic(dir + "/model_index.json", R"({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]})");
  save(dir + "/unet/diffusion_pytorch_model.safetensors", ldm_unet_to_diffusers(unet, "u"), false);
  save(dir + "/vae/diffusion_pytorch_model.fp16.safetensors", ldm_vae_to_diffusers(vae, "v"), false);  // variant fallback
  write_file_atomic(dir + "/vae/config.json", R"({"scaling_factor": 0.25})");
  save(dir + "/text_encoder/pytorch_model.bin", te, true);  // torch.save .bin
  write_file_atomic(dir + "/scheduler/scheduler_config.json",
                    R"({"prediction_type": "v_prediction", "beta_start": 0.001, "beta_end": 0.015, "beta_schedule": "scaled_linear",
                        "timestep_spacing": "trailing", "steps_offset": 1, "num_train_timesteps": 1000})");
  const SdCheckpoint c = load_sd_checkpoint(dir);
  EXPECT_EQ(c.family, "sd2");
  EXPECT_EQ(c.prediction, "v");
  EXPECT_EQ(c.prediction_source, "scheduler_config.json");
  expect_same_dicts(c.unet, unet);
  expect_same_dicts(c.vae, vae);
  expect_same_dicts(c.text_encoders[0].weights, te);
  EXPECT_EQ(c.text_encoders[0].tokenizer_dir, dir + "/tokenizer");
  EXPECT_DOUBLE_EQ(c.vae_config.scaling_factor, 0.25);
  EXPECT_DOUBLE_EQ(c.schedule.beta_end, 0.015);
  EXPECT_EQ(c.schedule.timestep_spacing, "trailing");
  EXPECT_EQ(c.schedule.steps_offset, 1);
  SdLoadOptions eps;
  eps.prediction = "eps";
  EXPECT_EQ(load_sd_checkpoint(dir, eps).prediction, "eps");
  // Sharded UNet weights (an index.json naming the shards)
  const StateDict du = ldm_unet_to_diffusers(unet, "u");
  StateDict s1, s2;
  std::string map;
  for (auto& [k, v] : du) {
    const bool first = s1.size() < du.size() / 2;
    (first ? s1 : s2)[k] = v;
    map += std::string(map.empty() ? "" : ",") + "\"" + k + "\": \"" + (first ? "a.safetensors" : "b.safetensors") + "\"";
  }
  std::remove((dir + "/unet/diffusion_pytorch_model.safetensors").c_str());
  save(dir + "/unet/a.safetensors", s1, false);
  save(dir + "/unet/b.safetensors", s2, false);
  write_file_atomic(dir + "/unet/diffusion_pytorch_model.safetensors.index.json", "{\"weight_map\": {" + map + "}}");
  expect_same_dicts(load_sd_checkpoint(dir).unet, unet);
  // Errors name what is missing
  std::remove((dir + "/unet/diffusion_pytorch_model.safetensors.index.json").c_str());
  EXPECT_ERROR(load_sd_checkpoint(dir), "/unet: no weights file (looked for diffusion_pytorch_model.safetensors");
  ::mkdir(tmp("empty_dir").c_str(), 0755);
  EXPECT_ERROR(load_sd_checkpoint(tmp("empty_dir")), "a folder must be a diffusers pipeline with model_index.json");
}

// ====================================================================== LoRA

namespace {

struct LoraFixture {
  StateDict unet = random_dict(ldm_unet_shapes(tiny_sd1()));
  StateDict te = random_dict(hf_clip_shapes(64));
  StateDict te2 = random_dict(hf_clip_shapes(128, 128));
  LoraTargets targets() const { return {&unet, &te, &te2}; }
  // down/up pairs: a linear (attn1.to_q), a 3x3 conv (resnet conv1), a 1x1 conv (proj_in), a text linear
  torch::Tensor q_down = torch::randn({4, 32}), q_up = torch::randn({32, 4});
  torch::Tensor c_down = torch::randn({2, 32, 3, 3}), c_up = torch::randn({32, 2, 1, 1});
  torch::Tensor p_down = torch::randn({3, 32, 1, 1}), p_up = torch::randn({32, 3, 1, 1});
  torch::Tensor t_down = torch::randn({4, 64}), t_up = torch::randn({64, 4});
  torch::Tensor t2_down = torch::randn({2, 128}), t2_up = torch::randn({128, 2});
};

const char* kQ = "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight";
const char* kConv = "input_blocks.1.0.in_layers.2.weight";
const char* kProj = "input_blocks.1.1.proj_in.weight";
const char* kTeQ = "text_model.encoder.layers.0.self_attn.q_proj.weight";

// The fixture's LoRA in one file format: module names (q, conv, proj, te1, te2) and the down/up suffixes.
StateDict lora_file(const LoraFixture& f, const std::vector<std::string>& m, const std::string& down, const std::string& up) {
  StateDict l;
  const std::vector<std::pair<torch::Tensor, torch::Tensor>> w = {
      {f.q_down, f.q_up}, {f.c_down, f.c_up}, {f.p_down, f.p_up}, {f.t_down, f.t_up}, {f.t2_down, f.t2_up}};
  const double alpha[] = {2, 1, 3, 4, 2};
  for (size_t i = 0; i < w.size(); ++i) {
    l[m[i] + down] = w[i].first;
    l[m[i] + up] = w[i].second;
    l[m[i] + ".alpha"] = torch::tensor(alpha[i], torch::kFloat32);
  }
  return l;
}

StateDict kohya(const LoraFixture& f, bool diffusers_names) {
  const std::string te = "_text_model_encoder_layers_", q = "_self_attn_q_proj";
  const std::vector<std::string> ldm = {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q",
                                        "lora_unet_input_blocks_1_0_in_layers_2", "lora_unet_input_blocks_1_1_proj_in",
                                        "lora_te1" + te + "0" + q, "lora_te2" + te + "1" + q};
  const std::vector<std::string> diffusers = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                                              "lora_unet_down_blocks_0_resnets_0_conv1",
                                              "lora_unet_down_blocks_0_attentions_0_proj_in", ldm[3], ldm[4]};
  return lora_file(f, diffusers_names ? diffusers : ldm, ".lora_down.weight", ".lora_up.weight");
}

StateDict peft(const LoraFixture& f, const char* down, const char* up) {
  return lora_file(f,
                   {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "unet.down_blocks.0.resnets.0.conv1",
                    "unet.down_blocks.0.attentions.0.proj_in", "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
                    "text_encoder_2.text_model.encoder.layers.1.self_attn.q_proj"},
                   down, up);
}

void expect_same_entries(const std::vector<LoraEntry>& a, const std::vector<LoraEntry>& b) {
  auto key = [](const std::vector<LoraEntry>& v) {
    std::map<std::string, const LoraEntry*> m;
    for (auto& e : v) m[e.component + ":" + e.target] = &e;
    return m;
  };
  const auto ma = key(a), mb = key(b);
  ASSERT_EQ(ma.size(), mb.size());
  for (auto& [k, e] : ma) {
    ASSERT_TRUE(mb.count(k)) << k;
    const LoraEntry& o = *mb.at(k);
    EXPECT_TRUE(torch::equal(e->down, o.down)) << k;
    EXPECT_TRUE(torch::equal(e->up, o.up)) << k;
    EXPECT_DOUBLE_EQ(e->scale(0.7), o.scale(0.7)) << k;
  }
}

}  // namespace

TEST(Lora, MergedWeightsEqualWPlusScaledUpDown) {
  torch::manual_seed(10);
  LoraFixture f;
  const auto entries = map_lora(kohya(f, false), f.targets(), "lora.safetensors");
  ASSERT_EQ(entries.size(), 5u);
  StateDict unet = f.unet, te = f.te;
  const double s = 0.8;
  merge_lora(unet, "unet", entries, s);
  merge_lora(te, "te1", entries, s);
  auto d64 = [](const torch::Tensor& t) { return t.to(torch::kFloat64); };
  // linear: W + s * alpha / r * up @ down
  EXPECT_TRUE(torch::allclose(d64(unet.at(kQ)), d64(f.unet.at(kQ)) + s * 2.0 / 4 * d64(f.q_up).mm(d64(f.q_down)), 1e-5, 1e-5));
  // 3x3 conv: delta[o, i, y, x] = s * alpha / r * sum_r up[o, r] down[r, i, y, x]
  const auto conv_delta = torch::einsum("or,riyx->oiyx", {d64(f.c_up).flatten(1), d64(f.c_down)}) * (s * 1.0 / 2);
  EXPECT_TRUE(torch::allclose(d64(unet.at(kConv)), d64(f.unet.at(kConv)) + conv_delta, 1e-5, 1e-5));
  const auto proj_delta = (d64(f.p_up).flatten(1).mm(d64(f.p_down).flatten(1)) * (s * 3.0 / 3)).view({32, 32, 1, 1});
  EXPECT_TRUE(torch::allclose(d64(unet.at(kProj)), d64(f.unet.at(kProj)) + proj_delta, 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(d64(te.at(kTeQ)), d64(f.te.at(kTeQ)) + s * 4.0 / 4 * d64(f.t_up).mm(d64(f.t_down)), 1e-5, 1e-5));
  // everything else untouched
  size_t changed = 0;
  for (auto& [k, v] : unet) changed += !torch::equal(v, f.unet.at(k));
  EXPECT_EQ(changed, 3u);
  // the runtime API: delta() is the same update, shaped like the target
  for (auto& e : entries)
    if (e.target == kConv) EXPECT_TRUE(torch::allclose(d64(e.delta(s)), conv_delta, 1e-5, 1e-5));
  // a whole checkpoint: lora_targets + merge_lora(SdCheckpoint&)
  SdCheckpoint ck = sd_checkpoint_from_state_dict(tiny_single_file("sd1"), "m.ckpt");
  StateDict no_te2 = kohya(f, false);
  for (auto it = no_te2.begin(); it != no_te2.end();) it = it->first.rfind("lora_te2_", 0) == 0 ? no_te2.erase(it) : std::next(it);
  const torch::Tensor q0 = ck.unet.at(kQ), t0 = ck.text_encoders[0].weights.at(kTeQ);
  merge_lora(ck, map_lora(no_te2, lora_targets(ck), "l"), 1.0);
  EXPECT_TRUE(torch::allclose(ck.unet.at(kQ), q0 + 0.5 * f.q_up.mm(f.q_down), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(ck.text_encoders[0].weights.at(kTeQ), t0 + f.t_up.mm(f.t_down), 1e-5, 1e-5));
  const torch::Tensor q1 = ck.unet.at(kQ);
  EXPECT_ERROR(merge_lora(ck, entries, 1.0), "targets te2, which this sd1 model does not have");
  EXPECT_TRUE(torch::equal(ck.unet.at(kQ), q1)) << "nothing merged on error";
  // bf16 weights stay bf16
  StateDict half = f.unet;
  half[kQ] = half[kQ].to(torch::kBFloat16);
  merge_lora(half, "unet", entries, s);
  EXPECT_EQ(half.at(kQ).scalar_type(), torch::kBFloat16);
}

TEST(Lora, KohyaAndDiffusersFormatsGiveIdenticalEntries) {
  torch::manual_seed(11);
  LoraFixture f;
  const auto ref = map_lora(kohya(f, false), f.targets(), "kohya");
  expect_same_entries(map_lora(kohya(f, true), f.targets(), "kohya-diffusers"), ref);
  expect_same_entries(map_lora(peft(f, ".lora_A.weight", ".lora_B.weight"), f.targets(), "peft"), ref);
  expect_same_entries(map_lora(peft(f, ".lora.down.weight", ".lora.up.weight"), f.targets(), "diffusers"), ref);
  std::map<std::string, std::string> target_of;
  for (auto& e : ref) target_of[e.source] = e.component + ":" + e.target;
  EXPECT_EQ(target_of.at("lora_unet_input_blocks_1_0_in_layers_2"), std::string("unet:") + kConv);
  EXPECT_EQ(target_of.at("lora_te2_text_model_encoder_layers_1_self_attn_q_proj"),
            "te2:text_model.encoder.layers.1.self_attn.q_proj.weight");
  // diffusers attention-processor files (to_q_lora / to_out_lora), without alpha: scale = strength
  StateDict proc;
  const std::string a = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.";
  proc[a + "to_out_lora.down.weight"] = torch::randn({2, 32});
  proc[a + "to_out_lora.up.weight"] = torch::randn({32, 2});
  const auto pe = map_lora(proc, f.targets(), "proc");
  ASSERT_EQ(pe.size(), 1u);
  StateDict bare;  // the oldest files have no "unet." prefix
  for (auto& [k, v] : proc) bare[k.substr(5)] = v;
  expect_same_entries(map_lora(bare, f.targets(), "bare"), pe);
  EXPECT_EQ(pe[0].target, "input_blocks.1.1.transformer_blocks.0.attn2.to_out.0.weight");
  EXPECT_FALSE(pe[0].alpha.has_value());
  EXPECT_DOUBLE_EQ(pe[0].scale(0.5), 0.5);
}

TEST(Lora, BadKeysAreErrorsNamingTheKey) {
  torch::manual_seed(12);
  LoraFixture f;
  auto one = [](const std::string& m, torch::Tensor d, torch::Tensor u) {
    return StateDict{{m + ".lora_down.weight", d}, {m + ".lora_up.weight", u}};
  };
  EXPECT_ERROR(map_lora(one("lora_unet_input_blocks_99_1_proj_in", f.p_down, f.p_up), f.targets(), "l.safetensors"),
               "l.safetensors: LoRA key 'lora_unet_input_blocks_99_1_proj_in.lora_down.weight' targets 'input_blocks_99_1_proj_in', which is not a unet parameter");
  EXPECT_ERROR(map_lora(one("lora_unet_input_blocks_1_1_proj_in", torch::randn({3, 31}), f.p_up), f.targets(), "l"),
               "LoRA module 'lora_unet_input_blocks_1_1_proj_in' (down [3, 31], up [32, 3, 1, 1]) does not fit unet 'input_blocks.1.1.proj_in.weight' of shape [32, 32, 1, 1]");
  EXPECT_ERROR(map_lora({{"lora_unet_input_blocks_1_1_proj_in.lora_down.weight", f.p_down}}, f.targets(), "l"), "lacks its up weight");
  EXPECT_ERROR(map_lora({{"lora_unet_input_blocks_1_1_proj_in.hada_w1_a", f.p_down}}, f.targets(), "l"),
               "unsupported LoRA variant in key 'lora_unet_input_blocks_1_1_proj_in.hada_w1_a'");
  EXPECT_ERROR(map_lora({{"model.weight", f.p_down}}, f.targets(), "l"), "'model.weight' is not a LoRA key");
  EXPECT_ERROR(map_lora(one("lora_foo_bar", f.q_down, f.q_up), f.targets(), "l"), "names no known component");
  LoraTargets sd1{&f.unet, &f.te, nullptr};
  EXPECT_ERROR(map_lora(kohya(f, false), sd1, "xl-lora"), "targets te2, which this model does not have");
  // merging into weights that changed shape since mapping
  const auto entries = map_lora(one("lora_unet_input_blocks_1_1_proj_in", f.p_down, f.p_up), f.targets(), "l");
  StateDict other = f.unet;
  other[kProj] = torch::zeros({32, 32});
  EXPECT_ERROR(merge_lora(other, "unet", entries, 1.0), "has shape [32, 32], the LoRA was mapped for [32, 32, 1, 1]");
  other.erase(kProj);
  EXPECT_ERROR(merge_lora(other, "unet", entries, 1.0), "target unet 'input_blocks.1.1.proj_in.weight' does not exist");
}
