// Stable Diffusion checkpoint loading: single LDM/SGM files and diffusers
// folders -> SdCheckpoint (family, configs, prediction type, state dicts in
// the layouts our modules load). See models/sd_checkpoint.h for the rules.
#include "tweedie/models/sd_checkpoint.h"

#include <sys/stat.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/models/sd_config.h"

namespace tweedie {

using json = nlohmann::json;

namespace {

bool starts(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
std::string base_name(const std::string& p) {
  const size_t s = p.find_last_of('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

const torch::Tensor& need(const StateDict& sd, const std::string& key, int64_t dim, const std::string& where,
                          const char* what) {
  auto it = sd.find(key);
  if (it == sd.end()) fail(where, ": ", what, " lacks '", key, "'");
  if (it->second.dim() != dim)
    fail(where, ": ", what, " '", key, "' has ", it->second.dim(), " dimensions, expected ", dim);
  return it->second;
}

// Largest index + 1 found right after `prefix` (0 if none).
int64_t count_after(const StateDict& sd, const std::string& prefix) {
  int64_t n = 0;
  for (auto it = sd.lower_bound(prefix); it != sd.end() && starts(it->first, prefix); ++it) {
    const std::string rest = it->first.substr(prefix.size());
    const std::string num = rest.substr(0, rest.find('.'));
    if (!num.empty() && num.size() < 7 && num.find_first_not_of("0123456789") == std::string::npos)
      n = std::max<int64_t>(n, std::stoll(num) + 1);
  }
  return n;
}

bool any_key(const StateDict& sd, const std::string& prefix) {
  auto it = sd.lower_bound(prefix);
  return it != sd.end() && starts(it->first, prefix);
}

json read_json(const std::string& path) {
  try {
    return json::parse(read_file(path));
  } catch (const json::exception& e) {
    fail(path, ": malformed JSON (", e.what(), ")");
  }
}

// The prediction type: the option, else what the config said (c.prediction
// already set), else the v_pred key, the SD2 file-name rule, eps.
void decide_prediction(SdCheckpoint& c, const SdLoadOptions& o, bool vpred_key, const std::string& name) {
  auto set = [&](const std::string& p, const std::string& src) {
    c.prediction = p;
    c.prediction_source = src;
  };
  std::string lower = base_name(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  if (!o.prediction.empty()) {
    check(o.prediction == "eps" || o.prediction == "v", "--prediction: expected eps or v, got '", o.prediction, "'");
    set(o.prediction, "option");
  } else if (!c.prediction.empty()) {
    // the config's
  } else if (vpred_key) {
    set("v", "v_pred key");
  } else if (c.family == "sd2" && (lower.find("768-v") != std::string::npos || lower.find("v-pred") != std::string::npos ||
                                   lower.find("vpred") != std::string::npos)) {
    set("v", "file name");
  } else {
    set("eps", "default");
  }
  if (c.family == "sd2" && c.prediction == "v" && c.config_source == "preset")
    c.unet_config.height = c.unet_config.width = 96;  // 768-px models
}

// The sibling <name>.yaml of a single file ("" if none).
std::string sibling_yaml(const std::string& path) {
  const size_t dot = path.find_last_of('.');
  const std::string yaml = (dot == std::string::npos || dot < path.find_last_of('/') + 1 ? path : path.substr(0, dot)) + ".yaml";
  return file_exists(yaml) ? yaml : "";
}

// Shapes from the weights, the rest by the tower's kind (OpenAI CLIP:
// quick_gelu, pads with EOS; OpenCLIP: gelu, pads with "!" = id 0) and the
// family's preset use of its layers (see sd_checkpoint.h).
void preset_text_encoders(SdCheckpoint& c, bool diffusers_form) {
  for (size_t i = 0; i < c.text_encoders.size(); ++i) {
    auto& te = c.text_encoders[i];
    const bool openclip = te.name != "clip_l";
    // Heads are not in the weights: 64 channels each in every released tower;
    // other widths need the model's config (checked by require_text_heads).
    const auto tok = te.weights.find("text_model.embeddings.token_embedding.weight");
    const int64_t width = tok != te.weights.end() && tok->second.dim() == 2 ? tok->second.size(1) : 64;
    te.config = infer_clip_text_config(te.weights, "", openclip ? "gelu" : "quick_gelu", width % 64 == 0 ? 64 : width);
    te.pad_token = openclip ? "!" : "<|endoftext|>";
    const int64_t L = te.config.layers;
    if (c.family == "sdxl") {
      te.layer = L - 1, te.final_norm = false, te.pooled = i == 1;
    } else if (c.family == "sd2" && !diffusers_form) {
      te.layer = L - 1, te.final_norm = true;  // penultimate + ln_final (LDM FrozenOpenCLIPEmbedder)
    } else {
      te.layer = L, te.final_norm = true;
    }
    if (te.layer < 1) fail(c.source, ": text encoder ", te.name, " has ", L, " layer(s), too few for the ", c.family, " rule");
  }
}

// A text tower whose width is not a multiple of 64 has no preset head count:
// its config must give them (SdTextEncoder::configured).
void require_text_heads(const SdCheckpoint& c) {
  for (size_t i = 0; i < c.text_encoders.size(); ++i) {
    const auto& te = c.text_encoders[i];
    check(te.config.width % 64 == 0 || te.configured, c.source, ": text encoder ", te.name, " is ", te.config.width,
          " wide, not a multiple of 64, so its attention heads cannot be told from the weights; give the model's "
          "config (--config FILE.yaml or .json; diffusers: text_encoder/config.json)");
  }
}

void preset_vae(SdCheckpoint& c) {
  c.vae_config = c.vae.empty() ? AutoencoderKLConfig{} : vae_config_from_weights(c.vae, c.source + " (VAE)");
  c.vae_config.scaling_factor = c.family == "sdxl" ? 0.13025 : 0.18215;
}

}  // namespace

// ------------------------------------------------------------ detection

void detect_sd_family(const StateDict& unet, const std::string& where, SdCheckpoint& c) {
  const char* what = "UNet";
  const auto& conv_in = need(unet, "input_blocks.0.0.weight", 4, where, what);
  const int64_t mc = conv_in.size(0);
  int64_t ctx = -1;
  bool linear = false;
  for (auto& [k, v] : unet) {
    if (ctx < 0 && ends_with(k, ".attn2.to_k.weight") && v.dim() == 2) ctx = v.size(1);
    if (ends_with(k, ".proj_in.weight")) linear = v.dim() == 2;
  }
  if (ctx < 0) fail(where, ": UNet has no cross-attention (no '*.attn2.to_k.weight'): not a text-to-image SD UNet");
  auto label = unet.find("label_emb.0.0.weight");
  if (label != unet.end()) {
    const auto& w = label->second;
    check(w.dim() == 2, where, ": label_emb.0.0.weight has ", w.dim(), " dimensions, expected 2");
    if (w.size(1) == 2560 && ctx == 1280)
      fail(where, ": the SDXL refiner (label_emb.0.0.weight [", w.size(0), ", 2560], context 1280) is not supported; "
                  "load an SDXL base, SD 2.x or SD 1.x model");
    if (c.family.empty()) c.family = "sdxl";
    check(c.family == "sdxl", where, ": a UNet with vector conditioning (label_emb) in a ", c.family,
          "-structured checkpoint (one text tower)");
  } else {
    check(c.family != "sdxl", where, ": an SDXL-structured checkpoint (two text towers) whose UNet has no vector "
                                     "conditioning (label_emb)");
    if (c.family.empty()) {
      if (ctx == 768) c.family = "sd1";
      else if (ctx == 1024) c.family = "sd2";
      else fail(where, ": cannot tell the family of a bare UNet with context width ", ctx,
                " (768 SD1, 1024 SD2): load it with its text encoder(s) or its config");
    }
  }
  SdUNetConfig u = SdUNetConfig::preset(c.family);
  u.in_channels = conv_in.size(1);
  u.model_channels = mc;
  u.out_channels = need(unet, "out.2.weight", 4, where, what).size(0);
  u.context_dim = ctx;
  u.use_linear_in_transformer = linear;
  u.adm_in_channels = label != unet.end() ? label->second.size(1) : 0;
  // Resnets per level: the first downsampler is input_blocks.(n+1).0.op.
  const int64_t blocks = count_after(unet, "input_blocks.");
  int64_t n = blocks - 1;
  for (int64_t k = 1; k < blocks; ++k)
    if (unet.count("input_blocks." + std::to_string(k) + ".0.op.weight")) {
      n = k - 1;
      break;
    }
  check(n >= 1 && blocks % (n + 1) == 0, where, ": UNet input_blocks (", blocks, ") do not form levels of ", n,
        " resnets and a downsampler");
  const int64_t levels = blocks / (n + 1);
  u.num_res_blocks = n;
  u.channel_mult.clear();
  u.transformer_depth.clear();
  u.attention_resolutions.clear();
  for (int64_t l = 0; l < levels; ++l) {
    const std::string b = "input_blocks." + std::to_string(1 + l * (n + 1));
    const int64_t ch = need(unet, b + ".0.out_layers.3.weight", 4, where, what).size(0);
    check(ch % mc == 0, where, ": UNet level ", l, " has ", ch, " channels, not a multiple of ", mc);
    u.channel_mult.push_back(ch / mc);
    const int64_t depth = count_after(unet, b + ".1.transformer_blocks.");
    u.transformer_depth.push_back(std::max<int64_t>(depth, 1));
    if (depth > 0) u.attention_resolutions.push_back(int64_t(1) << l);
  }
  u.transformer_depth_middle = count_after(unet, "middle_block.1.transformer_blocks.");
  check(count_after(unet, "output_blocks.") == levels * (n + 1), where, ": UNet has ", count_after(unet, "output_blocks."),
        " output_blocks, expected ", levels * (n + 1));
  // Heads and norm groups are not visible in the weights: the preset's (sd1 8 heads; sd2/sdxl 64
  // channels per head; 32 groups) unless the model's config states them; the structure is checked
  // here, the complete config once the model's config is applied (check_final_configs).
  try {
    SdUNetConfig probe = u;
    probe.norm_groups = 1, probe.num_heads = 1, probe.num_head_channels = -1, probe.level_heads.clear();
    probe.validate();
  } catch (const Error& e) {
    fail(where, ": UNet shapes give an invalid config: ", e.what());
  }
  c.inpainting = u.in_channels == 9;
  c.unet_config = u;
}

// The complete configs, once the model's own config (if any) is applied.
static void check_final_configs(const SdCheckpoint& c) {
  try {
    c.unet_config.validate();
  } catch (const Error& e) {
    fail(c.source, ": ", e.what(), " (heads and norm groups are not in the weights: give the model's config with --config)");
  }
  if (c.vae.empty()) return;
  try {
    c.vae_config.validate();
  } catch (const Error& e) {
    fail(c.source, ": ", e.what(), " (norm groups are not in the weights: give the model's config with --config)");
  }
}

AutoencoderKLConfig vae_config_from_weights(const StateDict& vae, const std::string& where) {
  const char* what = "VAE";
  AutoencoderKLConfig c;
  const auto& conv_in = need(vae, "encoder.conv_in.weight", 4, where, what);
  c.ch = conv_in.size(0);
  c.in_channels = conv_in.size(1);
  c.out_ch = need(vae, "decoder.conv_out.weight", 4, where, what).size(0);
  const int64_t levels = count_after(vae, "encoder.down.");
  check(levels >= 1, where, ": VAE has no encoder.down.* blocks");
  c.ch_mult.clear();
  for (int64_t l = 0; l < levels; ++l) {
    const int64_t ch = need(vae, "encoder.down." + std::to_string(l) + ".block.0.conv1.weight", 4, where, what).size(0);
    check(ch % c.ch == 0, where, ": VAE level ", l, " has ", ch, " channels, not a multiple of ", c.ch);
    c.ch_mult.push_back(ch / c.ch);
  }
  c.num_res_blocks = count_after(vae, "encoder.down.0.block.");
  c.use_quant_conv = vae.count("quant_conv.weight") > 0;
  const auto& dec_in = need(vae, "decoder.conv_in.weight", 4, where, what);
  c.z_channels = dec_in.size(1);
  c.embed_dim = c.use_quant_conv ? need(vae, "post_quant_conv.weight", 4, where, what).size(1) : c.z_channels;
  try {
    AutoencoderKLConfig probe = c;  // norm groups: the preset's unless a config states them
    probe.norm_groups = 1;
    probe.validate();
  } catch (const Error& e) {
    fail(where, ": VAE shapes give an invalid config: ", e.what());
  }
  return c;
}

std::string SdCheckpoint::describe() const {
  auto params = [](const StateDict& sd) {
    int64_t n = 0;
    for (auto& [k, v] : sd) n += v.numel();
    std::ostringstream o;
    o.precision(4);
    o << double(n) / 1e6 << "M";
    return o.str();
  };
  std::ostringstream o;
  o << family << (inpainting ? " inpainting" : "")
    << (unet_config.in_channels == 2 * unet_config.out_channels ? " instruct-pix2pix" : "") << ", prediction " << prediction << " (" << prediction_source
    << "), UNet " << params(unet) << " params (in " << unet_config.in_channels << ", context " << unet_config.context_dim
    << "), VAE " << (vae.empty() ? std::string("absent") : params(vae)) << " (scale " << vae_config.scaling_factor << ")";
  for (auto& te : text_encoders) o << ", " << te.name << " " << params(te.weights) << " (" << te.config.describe() << ")";
  if (ignored_keys) o << ", " << ignored_keys << " other keys ignored";
  return o.str();
}

// ------------------------------------------------------------ single files

SdCheckpoint sd_checkpoint_from_state_dict(const StateDict& sd, const std::string& name, const SdLoadOptions& opts,
                                          const std::map<std::string, std::string>* metadata) {
  SdCheckpoint c;
  c.source = name;
  const std::string U = "model.diffusion_model.";
  if (!any_key(sd, U)) {
    if (any_key(sd, "down_blocks.") || any_key(sd, "input_blocks."))
      fail(name, ": a bare UNet, not a full Stable Diffusion checkpoint: expected keys model.diffusion_model.* (LDM) "
                 "or a diffusers folder (model_index.json)");
    fail(name, ": not a Stable Diffusion checkpoint: expected keys model.diffusion_model.* (LDM) or a diffusers folder "
               "(model_index.json); found ",
         describe_keys(sd));
  }
  c.unet = with_prefix_removed(sd, U);
  size_t used = c.unet.size();
  if (opts.use_ema) {
    size_t found = 0;
    for (auto& [k, v] : c.unet) {
      std::string flat = "diffusion_model." + k;
      flat.erase(std::remove(flat.begin(), flat.end(), '.'), flat.end());
      auto it = sd.find("model_ema." + flat);
      if (it == sd.end()) fail(name, ": --ema: no EMA copy 'model_ema.", flat, "' of UNet weight '", k, "'");
      check(it->second.sizes() == v.sizes(), name, ": EMA weight 'model_ema.", flat, "' has another shape than '", k, "'");
      v = it->second;
      ++found;
    }
    used += found;
  }
  // The family by structure: which text towers the file holds.
  if (any_key(sd, "conditioner.embedders.")) c.family = "sdxl";
  else if (any_key(sd, "cond_stage_model.model.")) c.family = "sd2";
  else if (any_key(sd, "cond_stage_model.transformer.")) c.family = "sd1";
  detect_sd_family(c.unet, name, c);
  for (auto& [k, v] : with_prefix_removed(sd, "first_stage_model."))
    if (!starts(k, "loss.")) c.vae.emplace(k, v);  // training-only discriminator weights are dropped
  used += c.vae.size();
  auto add_text = [&](const std::string& te_name, const std::string& prefix) {
    StateDict w = with_prefix_removed(sd, prefix);
    if (w.empty()) fail(name, ": ", c.family, " checkpoint without its text encoder (expected keys ", prefix, "*)");
    used += w.size();
    if (is_openclip_layout(w, "")) {
      w = openclip_to_hf(w, "", "");
    } else if (!any_key(w, "text_model.")) {  // older transformers saved CLIPTextModel without "text_model."
      StateDict renamed;
      for (auto& [k, v] : w) renamed.emplace(starts(k, "text_projection") ? k : "text_model." + k, v);
      w = std::move(renamed);
    }
    SdTextEncoder te;
    te.name = te_name;
    te.weights = std::move(w);
    c.text_encoders.push_back(std::move(te));
  };
  if (c.family == "sd1") add_text("clip_l", "cond_stage_model.transformer.");
  if (c.family == "sd2") add_text("openclip_h", "cond_stage_model.model.");
  if (c.family == "sdxl") {
    add_text("clip_l", "conditioner.embedders.0.transformer.");
    add_text("openclip_bigg", "conditioner.embedders.1.model.");
  }
  c.ignored_keys = sd.size() - std::min(sd.size(), used);
  preset_vae(c);
  preset_text_encoders(c, false);
  // The model's own config: --config, else tweedie's metadata, else a sibling .yaml.
  const auto meta = metadata ? metadata->find("tweedie.sd") : std::map<std::string, std::string>::const_iterator();
  const std::string yaml = sibling_yaml(name);
  if (!opts.config.empty()) {
    apply_sd_config_file(c, opts.config);
  } else if (metadata && meta != metadata->end()) {
    apply_tweedie_sd_config(c, meta->second, base_name(name) + " (tweedie.sd metadata)");
  } else if (!yaml.empty()) {
    apply_ldm_yaml(c, read_file(yaml), base_name(yaml));
  }
  require_text_heads(c);
  check_final_configs(c);
  decide_prediction(c, opts, sd.count("v_pred") > 0, name);
  return c;
}

// ------------------------------------------------------------ diffusers folders

namespace {

// The weights of one diffusers component folder, in the first form present.
StateDict load_component(const std::string& dir, const std::vector<std::string>& stems, const SdLoadOptions& opts) {
  LoadOptions lo;
  lo.dtype = opts.dtype;
  std::vector<std::string> tried;
  for (const auto& stem : stems)
    for (const char* variant : {"", ".fp16"})
      for (const char* ext : {".safetensors", ".bin"}) {
        const std::string file = dir + "/" + stem + variant + ext;
        tried.push_back(base_name(file));
        if (file_exists(file)) return load_state_dict(file, lo);
        // sharded: <stem><ext>.index[<variant>].json = {"weight_map": {name: shard file}}
        const std::string index = dir + "/" + stem + ext + ".index" + variant + ".json";
        if (!file_exists(index)) continue;
        const json j = read_json(index);
        check(j.contains("weight_map") && j["weight_map"].is_object(), index, ": no \"weight_map\" object");
        std::set<std::string> shards;
        for (auto& [k, v] : j["weight_map"].items()) {
          check(v.is_string(), index, ": weight_map value for '", k, "' is not a file name");
          shards.insert(v.get<std::string>());
        }
        StateDict all;
        for (auto& s : shards) {
          check(s.find('/') == std::string::npos, index, ": shard name '", s, "' must be a plain file name");
          for (auto& [k, v] : load_state_dict(dir + "/" + s, lo))
            check(all.emplace(k, v).second, dir, "/", s, ": tensor '", k, "' is in two shards");
        }
        return all;
      }
  std::string list;
  for (auto& t : tried) list += (list.empty() ? "" : ", ") + t;
  fail(dir, ": no weights file (looked for ", list, " and sharded *.index.json)");
}

}  // namespace

static SdCheckpoint load_diffusers_folder(const std::string& dir, const SdLoadOptions& opts) {
  SdCheckpoint c;
  c.source = dir;
  const json index = read_json(dir + "/model_index.json");
  check(index.is_object(), dir, "/model_index.json: expected a JSON object");
  const std::vector<std::string> model_stems{"diffusion_pytorch_model"}, te_stems{"model", "pytorch_model"};
  c.unet = diffusers_unet_to_ldm(load_component(dir + "/unet", model_stems, opts), dir + "/unet");
  // The family by structure: two text encoders (SDXL), else the tower's kind
  // (OpenCLIP-style gelu = SD2, OpenAI CLIP quick_gelu = SD1).
  if (is_directory(dir + "/text_encoder_2")) {
    c.family = "sdxl";
  } else if (file_exists(dir + "/text_encoder/config.json")) {
    const json t = read_json(dir + "/text_encoder/config.json");
    const std::string act = t.is_object() && t.contains("hidden_act") && t["hidden_act"].is_string()
                                ? t["hidden_act"].get<std::string>() : "";
    if (act == "gelu") c.family = "sd2";
    else if (act == "quick_gelu") c.family = "sd1";
  }
  detect_sd_family(c.unet, dir + "/unet", c);
  if (is_directory(dir + "/vae"))
    c.vae = diffusers_vae_to_ldm(load_component(dir + "/vae", model_stems, opts), dir + "/vae");
  auto add_text = [&](const std::string& te_name, const std::string& sub, const std::string& tok) {
    check(is_directory(dir + "/" + sub), dir, ": ", c.family, " model without its ", sub, "/ folder");
    StateDict w = load_component(dir + "/" + sub, te_stems, opts);
    if (is_openclip_layout(w, "")) w = openclip_to_hf(w, "", "");
    SdTextEncoder te;
    te.name = te_name;
    te.weights = std::move(w);
    te.tokenizer_dir = is_directory(dir + "/" + tok) ? dir + "/" + tok : "";
    c.text_encoders.push_back(std::move(te));
  };
  add_text(c.family == "sd2" ? "openclip_h" : "clip_l", "text_encoder", "tokenizer");
  if (c.family == "sdxl") add_text("openclip_bigg", "text_encoder_2", "tokenizer_2");

  preset_vae(c);
  preset_text_encoders(c, true);
  apply_diffusers_configs(c, dir);
  require_text_heads(c);
  check_final_configs(c);
  decide_prediction(c, opts, false, dir);
  return c;
}

StateDict load_sd_vae(const std::string& path, const SdLoadOptions& opts, AutoencoderKLConfig* config) {
  StateDict sd;
  if (is_directory(path)) {
    sd = load_component(path, {"diffusion_pytorch_model"}, opts);
  } else {
    LoadOptions lo;
    lo.dtype = opts.dtype;
    sd = load_state_dict(path, lo);
  }
  if (any_key(sd, "first_stage_model.")) sd = with_prefix_removed(sd, "first_stage_model.");
  for (auto it = sd.begin(); it != sd.end();) it = starts(it->first, "loss.") ? sd.erase(it) : std::next(it);
  if (any_key(sd, "encoder.down_blocks.") || any_key(sd, "decoder.up_blocks.")) sd = diffusers_vae_to_ldm(sd, path);
  if (!sd.count("encoder.conv_in.weight") && !sd.count("decoder.conv_in.weight"))
    fail(path, ": not a VAE: expected keys encoder.* / decoder.* (LDM or diffusers) or first_stage_model.*; found ",
         describe_keys(sd));
  const AutoencoderKLConfig c = vae_config_from_weights(sd, path);
  if (config) *config = c;
  return sd;
}

SdCheckpoint load_sd_checkpoint(const std::string& path, const SdLoadOptions& opts) {
  if (is_directory(path)) {
    if (!file_exists(path + "/model_index.json"))
      fail(path, ": not a Stable Diffusion checkpoint: a folder must be a diffusers pipeline with model_index.json");
    return load_diffusers_folder(path, opts);
  }
  LoadOptions lo;
  lo.dtype = opts.dtype;
  std::map<std::string, std::string> metadata;
  const StateDict sd = load_state_dict(path, lo, &metadata);
  return sd_checkpoint_from_state_dict(sd, path, opts, &metadata);
}

}  // namespace tweedie
