// Stable Diffusion architecture configs: tweedie JSON, LDM/SGM yaml and
// diffusers config.json, read and written (see models/sd_config.h).
#include "tweedie/models/sd_config.h"

#include <sys/stat.h>

#include <algorithm>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/yaml.h"

namespace tweedie {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

json read_json_file(const std::string& path) {
  try {
    return json::parse(read_file(path));
  } catch (const json::exception& e) {
    fail(path, ": malformed JSON (", e.what(), ")");
  }
}

// "where: field = config value but the weights have weights value".
template <class T>
void agree(const std::string& where, const std::string& field, const T& config, const T& weights) {
  if (!(config == weights))
    fail(where, ": ", field, " = ", json(config).dump(), " but the weights have ", json(weights).dump());
}

// The levels with attention and their depths, as a comparable list (0 = none).
std::vector<int64_t> attention_depths(const SdUNetConfig& u) {
  std::vector<int64_t> d;
  for (int64_t l = 0; l < int64_t(u.channel_mult.size()); ++l) d.push_back(u.depth_at(l));
  return d;
}

// Every size a UNet config fixes must be the weights'.
void check_unet_sizes(const SdUNetConfig& g, const SdUNetConfig& w, const std::string& where, const std::string& p) {
  agree(where, p + "in_channels", g.in_channels, w.in_channels);
  agree(where, p + "out_channels", g.out_channels, w.out_channels);
  agree(where, p + "model_channels", g.model_channels, w.model_channels);
  agree(where, p + "channel_mult", g.channel_mult, w.channel_mult);
  agree(where, p + "num_res_blocks", g.num_res_blocks, w.num_res_blocks);
  agree(where, p + "transformer_depth (per level, 0 = no attention)", attention_depths(g), attention_depths(w));
  agree(where, p + "transformer_depth_middle", g.middle_depth(), w.middle_depth());
  agree(where, p + "context_dim", g.context_dim, w.context_dim);
  agree(where, p + "use_linear_in_transformer", g.use_linear_in_transformer, w.use_linear_in_transformer);
  agree(where, p + "adm_in_channels", g.adm_in_channels, w.adm_in_channels);
}

void check_vae_sizes(const AutoencoderKLConfig& g, const AutoencoderKLConfig& w, const std::string& where,
                     const std::string& p) {
  agree(where, p + "in_channels", g.in_channels, w.in_channels);
  agree(where, p + "out_ch", g.out_ch, w.out_ch);
  agree(where, p + "ch", g.ch, w.ch);
  agree(where, p + "ch_mult", g.ch_mult, w.ch_mult);
  agree(where, p + "num_res_blocks", g.num_res_blocks, w.num_res_blocks);
  agree(where, p + "z_channels", g.z_channels, w.z_channels);
  agree(where, p + "embed_dim", g.embed_dim, w.embed_dim);
  agree(where, p + "use_quant_conv", g.use_quant_conv, w.use_quant_conv);
}

void check_text_sizes(const ClipTextConfig& g, const ClipTextConfig& w, const std::string& where, const std::string& p) {
  agree(where, p + "vocab_size", g.vocab_size, w.vocab_size);
  agree(where, p + "width", g.width, w.width);
  agree(where, p + "layers", g.layers, w.layers);
  agree(where, p + "intermediate", g.intermediate, w.intermediate);
  agree(where, p + "max_positions", g.max_positions, w.max_positions);
  agree(where, p + "projection_dim", g.projection_dim, w.projection_dim);
}

// A config struct from its JSON (T::from_json), its Error prefixed with where and what.
template <class T>
T parsed(const json& v, const std::string& where, const std::string& what) {
  try {
    return T::from_json(v.dump());
  } catch (const Error& e) {
    fail(where, ": ", what, ": ", e.what());
  }
}

void check_layer_use(const SdTextEncoder& t, const std::string& where) {
  check(t.layer >= 1 && t.layer <= t.config.layers, where, ": text encoder ", t.name, " layer ", t.layer,
        " is not in [1, ", t.config.layers, "]");
}

// Typed reads from a YAML/JSON object with errors naming the dotted path.
struct Node {
  const json* j;
  std::string path;  // "model.params"
  std::string where;

  bool has(const std::string& k) const { return j->is_object() && j->contains(k) && !j->at(k).is_null(); }
  Node at(const std::string& k) const {
    if (!has(k)) fail(where, ": missing '", path.empty() ? k : path + "." + k, "'");
    return {&j->at(k), path.empty() ? k : path + "." + k, where};
  }
  std::string name(const std::string& k) const { return path.empty() ? k : path + "." + k; }
  [[noreturn]] void bad(const std::string& k, const std::string& why) const {
    fail(where, ": '", name(k), "' = ", has(k) ? j->at(k).dump() : std::string("(absent)"), ": ", why);
  }
  int64_t integer(const std::string& k) const {
    const json& v = at(k).j[0];
    if (!v.is_number_integer()) bad(k, "must be an integer");
    return v.get<int64_t>();
  }
  double number(const std::string& k) const {
    const json& v = at(k).j[0];
    if (!v.is_number()) bad(k, "must be a number");
    return v.get<double>();
  }
  bool boolean(const std::string& k) const {
    const json& v = at(k).j[0];
    if (!v.is_boolean()) bad(k, "must be true or false");
    return v.get<bool>();
  }
  std::string string(const std::string& k) const {
    const json& v = at(k).j[0];
    if (!v.is_string()) bad(k, "must be a string");
    return v.get<std::string>();
  }
  std::vector<int64_t> int_list(const std::string& k) const {
    const json& v = at(k).j[0];
    if (!v.is_array()) bad(k, "must be a list of integers");
    std::vector<int64_t> out;
    for (auto& e : v) {
      if (!e.is_number_integer()) bad(k, "must be a list of integers");
      out.push_back(e.get<int64_t>());
    }
    return out;
  }
  // An integer, or a list with one entry per level (given n levels).
  std::vector<int64_t> per_level(const std::string& k, size_t n) const {
    if (at(k).j->is_number_integer()) return std::vector<int64_t>(n, integer(k));
    auto v = int_list(k);
    if (v.size() != n) bad(k, "needs one entry per level (" + std::to_string(n) + ")");
    return v;
  }
};

std::string pred_from_ldm(const std::string& p, const Node& n, const std::string& k) {
  if (p == "eps") return "eps";
  if (p == "v") return "v";
  n.bad(k, "unsupported parameterization (expected eps or v)");
}

// LDM's beta_schedule names -> diffusers'.
std::string beta_schedule_from_ldm(const std::string& s, const Node& n) {
  if (s == "linear") return "scaled_linear";  // LDM's "linear" is linear in sqrt(beta)
  if (s == "sqrt_linear") return "linear";
  if (s == "cosine") return "squaredcos_cap_v2";
  n.bad("beta_schedule", "unsupported (expected linear, sqrt_linear or cosine)");
}

std::string beta_schedule_to_ldm(const std::string& s) {
  if (s == "scaled_linear") return "linear";
  if (s == "linear") return "sqrt_linear";
  if (s == "squaredcos_cap_v2") return "cosine";
  fail("ldm yaml: beta_schedule '", s, "' has no LDM name");
}

// A text embedder of an LDM/SGM yaml applied to encoder t. LDM names the
// tower by a hub id (params.version); tweedie's yamls add the tower's
// architecture as "tweedie_text_config" beside target and params (which
// LDM's instantiate_from_config ignores), for towers of other sizes.
void apply_ldm_embedder(SdTextEncoder& t, const Node& e) {
  const std::string target = e.string("target");
  if (e.has("tweedie_text_config")) {
    const auto g = parsed<ClipTextConfig>(e.j->at("tweedie_text_config"), e.where, e.name("tweedie_text_config"));
    check_text_sizes(g, t.config, e.where, e.name("tweedie_text_config") + ".");
    t.config = g;
    t.configured = true;
  }
  const Node params = e.has("params") ? e.at("params") : Node{&e.j[0], e.path, e.where};
  const auto layer_name = [&](const std::string& def) { return params.has("layer") ? params.string("layer") : def; };
  const int64_t L = t.config.layers;
  const auto ends = [&](const char* s) {
    const std::string n(s);
    return target.size() >= n.size() && target.compare(target.size() - n.size(), n.size(), n) == 0;
  };
  if (ends("FrozenCLIPEmbedder")) {
    const std::string layer = layer_name("last");
    if (layer == "last") {
      t.layer = L, t.final_norm = true;
    } else if (layer == "hidden") {
      int64_t idx = params.integer("layer_idx");
      if (idx < 0) idx += L + 1;  // hidden_states has L + 1 entries
      if (idx < 1 || idx > L) params.bad("layer_idx", "is not a hidden layer of the " + std::to_string(L) + "-layer encoder");
      t.layer = idx, t.final_norm = false;
    } else {
      params.bad("layer", "unsupported (expected last or hidden)");
    }
  } else if (ends("FrozenOpenCLIPEmbedder") || ends("FrozenOpenCLIPEmbedder2")) {
    const bool sgm2 = ends("FrozenOpenCLIPEmbedder2");
    const std::string layer = layer_name("last");
    if (layer == "last") t.layer = L;
    else if (layer == "penultimate") t.layer = L - 1;
    else params.bad("layer", "unsupported (expected last or penultimate)");
    // LDM's embedder applies ln_final; SGM's second one only when legacy.
    t.final_norm = !sgm2 || (params.has("legacy") ? params.boolean("legacy") : true);
    if (sgm2) t.pooled = true;
  } else {
    e.bad("target", "unsupported text embedder (expected FrozenCLIPEmbedder, FrozenOpenCLIPEmbedder or FrozenOpenCLIPEmbedder2)");
  }
  check_layer_use(t, e.where);
}

}  // namespace

// ---------------------------------------------------------------- tweedie JSON

namespace {

// The scheduler fields (diffusers' scheduler_config.json names) a config states.
void read_schedule(const Node& s, SdScheduleInfo& d) {
  if (s.has("num_train_timesteps")) d.num_train_timesteps = s.integer("num_train_timesteps");
  if (s.has("beta_start")) d.beta_start = s.number("beta_start");
  if (s.has("beta_end")) d.beta_end = s.number("beta_end");
  if (s.has("beta_schedule")) d.beta_schedule = s.string("beta_schedule");
  if (s.has("timestep_spacing")) d.timestep_spacing = s.string("timestep_spacing");
  if (s.has("steps_offset")) d.steps_offset = s.integer("steps_offset");
  if (s.has("rescale_betas_zero_snr")) d.rescale_betas_zero_snr = s.boolean("rescale_betas_zero_snr");
}

// scheduler/scheduler_config.json: the schedule and the prediction type.
void apply_diffusers_scheduler(SdCheckpoint& c, const std::string& path) {
  const json j = read_json_file(path);
  check(j.is_object(), path, ": expected a JSON object");
  const Node s{&j, "", path};
  read_schedule(s, c.schedule);
  if (!s.has("prediction_type")) return;
  const std::string p = s.string("prediction_type");
  if (p == "epsilon") c.prediction = "eps";
  else if (p == "v_prediction") c.prediction = "v";
  else s.bad("prediction_type", "unsupported (expected epsilon or v_prediction)");
  c.prediction_source = "scheduler_config.json";
}

}  // namespace

void apply_tweedie_sd_config(SdCheckpoint& c, const std::string& json_text, const std::string& where) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    fail(where, ": malformed JSON (", e.what(), ")");
  }
  check(j.is_object(), where, ": expected a JSON object");
  static const std::set<std::string> known = {"family", "prediction", "unet", "vae", "text_encoders", "schedule",
                                              "size_embed_dim"};
  for (auto& [k, v] : j.items()) check(known.count(k), where, ": unknown key '", k, "'");
  const Node n{&j, "", where};
  if (n.has("family")) agree(where, "family", n.string("family"), c.family);
  if (n.has("prediction")) {
    c.prediction = pred_from_ldm(n.string("prediction"), n, "prediction");
    c.prediction_source = where;
  }
  if (n.has("unet")) {
    const auto g = parsed<SdUNetConfig>(j["unet"], where, "unet");
    check_unet_sizes(g, c.unet_config, where, "unet.");
    c.unet_config = g;
  }
  if (n.has("vae") && !c.vae.empty()) {
    const auto g = parsed<AutoencoderKLConfig>(j["vae"], where, "vae");
    check_vae_sizes(g, c.vae_config, where, "vae.");
    c.vae_config = g;
  }
  if (n.has("text_encoders")) {
    const json& te = j["text_encoders"];
    check(te.is_array() && te.size() == c.text_encoders.size(), where, ": text_encoders must list the ",
          c.text_encoders.size(), " text encoder(s) of the weights");
    for (size_t i = 0; i < te.size(); ++i) {
      const Node e{&te[i], "text_encoders." + std::to_string(i), where};
      SdTextEncoder& t = c.text_encoders[i];
      if (e.has("name")) agree(where, e.name("name"), e.string("name"), t.name);
      if (e.has("config")) {
        const auto g = parsed<ClipTextConfig>(te[i]["config"], where, e.name("config"));
        check_text_sizes(g, t.config, where, e.name("config") + ".");
        t.config = g;
        t.configured = true;
      }
      if (e.has("layer")) t.layer = e.integer("layer");
      if (e.has("final_norm")) t.final_norm = e.boolean("final_norm");
      if (e.has("pooled")) t.pooled = e.boolean("pooled");
      if (e.has("pad_token")) t.pad_token = e.string("pad_token");
      check_layer_use(t, where);
    }
  }
  if (n.has("schedule")) read_schedule(n.at("schedule"), c.schedule);
  if (n.has("size_embed_dim")) c.size_embed_dim = n.integer("size_embed_dim");
  c.config_source = where;
}

std::string tweedie_sd_config(const SdCheckpoint& c) {
  ojson j;
  j["family"] = c.family;
  j["prediction"] = c.prediction;
  j["unet"] = ojson::parse(c.unet_config.to_json());
  if (!c.vae.empty()) j["vae"] = ojson::parse(c.vae_config.to_json());
  j["text_encoders"] = ojson::array();
  for (auto& t : c.text_encoders) {
    ojson e;
    e["name"] = t.name;
    e["config"] = ojson::parse(t.config.to_json());
    e["layer"] = t.layer;
    e["final_norm"] = t.final_norm;
    e["pooled"] = t.pooled;
    e["pad_token"] = t.pad_token;
    j["text_encoders"].push_back(e);
  }
  const auto& s = c.schedule;
  j["schedule"] = {{"num_train_timesteps", s.num_train_timesteps}, {"beta_start", s.beta_start},
                   {"beta_end", s.beta_end},   {"beta_schedule", s.beta_schedule},
                   {"timestep_spacing", s.timestep_spacing}, {"steps_offset", s.steps_offset},
                   {"rescale_betas_zero_snr", s.rescale_betas_zero_snr}};
  j["size_embed_dim"] = c.size_embed_dim;
  return j.dump();
}

// ---------------------------------------------------------------- LDM / SGM yaml

void apply_ldm_yaml(SdCheckpoint& c, const std::string& yaml_text, const std::string& where) {
  const json y = parse_yaml(yaml_text, where);
  const Node root{&y, "", where};
  const Node model = root.at("model");
  const Node p = model.at("params");
  const bool sgm = model.has("target") && model.string("target").find("DiffusionEngine") != std::string::npos;

  // Prediction and schedule.
  if (p.has("parameterization")) {
    c.prediction = pred_from_ldm(p.string("parameterization"), p, "parameterization");
    c.prediction_source = where;
  } else if (sgm && p.has("denoiser_config")) {
    const Node d = p.at("denoiser_config");
    if (d.has("params") && d.at("params").has("scaling_config")) {
      const std::string t = d.at("params").at("scaling_config").string("target");
      check(t.find("VScaling") != std::string::npos || t.find("EpsScaling") != std::string::npos, where,
            ": denoiser scaling '", t, "' is not supported (EpsScaling or VScaling)");
      c.prediction = t.find("VScaling") != std::string::npos ? "v" : "eps";
      c.prediction_source = where;
    }
  } else {
    c.prediction = "eps";  // LDM's default parameterization
    c.prediction_source = where;
  }
  if (p.has("linear_start")) c.schedule.beta_start = p.number("linear_start");
  if (p.has("linear_end")) c.schedule.beta_end = p.number("linear_end");
  if (p.has("timesteps")) c.schedule.num_train_timesteps = p.integer("timesteps");
  if (p.has("beta_schedule")) c.schedule.beta_schedule = beta_schedule_from_ldm(p.string("beta_schedule"), p);
  if (p.has("scale_factor")) c.vae_config.scaling_factor = p.number("scale_factor");

  // UNet.
  const std::string unet_key = sgm ? "network_config" : "unet_config";
  if (p.has(unet_key)) {
    const Node u = p.at(unet_key).at("params");
    SdUNetConfig g = c.unet_config;
    const size_t levels = u.has("channel_mult") ? u.int_list("channel_mult").size() : g.channel_mult.size();
    for (const char* k : {"use_spatial_transformer", "conv_resample"})
      if (u.has(k) && !u.boolean(k)) u.bad(k, "must be true for a Stable Diffusion UNet");
    for (const char* k : {"resblock_updown", "use_scale_shift_norm", "use_new_attention_order"})
      if (u.has(k) && u.boolean(k)) u.bad(k, "is not supported");
    if (u.has("dims") && u.integer("dims") != 2) u.bad("dims", "must be 2");
    for (const char* k : {"disable_self_attentions", "num_attention_blocks", "transformer_depth_middle_list"})
      if (u.has(k)) u.bad(k, "is not supported");
    if (u.has("in_channels")) g.in_channels = u.integer("in_channels");
    if (u.has("out_channels")) g.out_channels = u.integer("out_channels");
    if (u.has("model_channels")) g.model_channels = u.integer("model_channels");
    if (u.has("channel_mult")) g.channel_mult = u.int_list("channel_mult");
    if (u.has("num_res_blocks")) g.num_res_blocks = u.integer("num_res_blocks");
    if (u.has("attention_resolutions")) g.attention_resolutions = u.int_list("attention_resolutions");
    if (u.has("transformer_depth")) {
      g.transformer_depth = u.per_level("transformer_depth", levels);
      for (auto& d : g.transformer_depth) d = std::max<int64_t>(d, 1);  // SGM lists 0 for levels without attention
      for (int64_t l = 0; l < int64_t(levels); ++l)
        if (u.per_level("transformer_depth", levels)[l] == 0)
          for (auto a : g.attention_resolutions)
            if (a == (int64_t(1) << l)) u.bad("transformer_depth", "is 0 at a level listed in attention_resolutions");
      g.transformer_depth_middle = u.has("transformer_depth_middle") ? u.integer("transformer_depth_middle")
                                                                     : g.transformer_depth.back();
    }
    if (u.has("context_dim")) g.context_dim = u.integer("context_dim");
    g.use_linear_in_transformer = u.has("use_linear_in_transformer") && u.boolean("use_linear_in_transformer");
    g.adm_in_channels = u.has("adm_in_channels") ? u.integer("adm_in_channels") : 0;
    const int64_t heads = u.has("num_heads") ? u.integer("num_heads") : -1;
    const int64_t head_ch = u.has("num_head_channels") ? u.integer("num_head_channels") : -1;
    if (heads <= 0 && head_ch <= 0) u.bad("num_heads", "give num_heads or num_head_channels");
    g.num_heads = heads, g.num_head_channels = head_ch, g.level_heads.clear();
    check_unet_sizes(g, c.unet_config, where, u.path + ".");
    try {
      g.validate();
    } catch (const Error& e) {
      fail(where, ": ", u.path, ": ", e.what());
    }
    c.unet_config = g;
  }

  // VAE.
  if (p.has("first_stage_config") && !c.vae.empty()) {
    const Node f = p.at("first_stage_config").at("params");
    AutoencoderKLConfig g = c.vae_config;
    if (f.has("embed_dim")) g.embed_dim = f.integer("embed_dim");
    if (f.has("ddconfig")) {
      const Node d = f.at("ddconfig");
      if (d.has("ch")) g.ch = d.integer("ch");
      if (d.has("ch_mult")) g.ch_mult = d.int_list("ch_mult");
      if (d.has("num_res_blocks")) g.num_res_blocks = d.integer("num_res_blocks");
      if (d.has("z_channels")) g.z_channels = d.integer("z_channels");
      if (d.has("in_channels")) g.in_channels = d.integer("in_channels");
      if (d.has("out_ch")) g.out_ch = d.integer("out_ch");
      if (d.has("attn_resolutions") && !d.int_list("attn_resolutions").empty())
        d.bad("attn_resolutions", "attention outside the middle block is not supported");
    }
    check_vae_sizes(g, c.vae_config, where, f.path + ".");
    c.vae_config = g;
  }

  // Text encoders.
  std::vector<Node> text;
  if (!sgm && p.has("cond_stage_config")) text.push_back(p.at("cond_stage_config"));
  if (sgm && p.has("conditioner_config")) {
    const Node cc = p.at("conditioner_config").at("params").at("emb_models");
    check(cc.j->is_array(), where, ": '", cc.path, "' must be a list");
    for (size_t i = 0; i < cc.j->size(); ++i) {
      const Node e{&cc.j->at(i), cc.path + "." + std::to_string(i), where};
      const std::string target = e.string("target");
      if (target.find("ConcatTimestepEmbedderND") != std::string::npos) {
        c.size_embed_dim = e.at("params").integer("outdim");
      } else if (!e.has("input_key") || e.string("input_key") == "txt") {
        text.push_back(e);
      } else {
        e.bad("target", "unsupported conditioner");
      }
    }
  }
  if (!text.empty()) {
    check(text.size() == c.text_encoders.size(), where, ": the config has ", text.size(),
          " text embedder(s), the weights ", c.text_encoders.size());
    for (size_t i = 0; i < text.size(); ++i) apply_ldm_embedder(c.text_encoders[i], text[i]);
  }
  c.config_source = where;
}

std::string ldm_yaml(const SdCheckpoint& c) {
  const bool sgm = c.family == "sdxl";
  const auto& u = c.unet_config;
  check(u.level_heads.empty() || [&] {
    // Per-level heads are expressible when they follow one of LDM's two rules.
    for (size_t l = 0; l < u.channel_mult.size(); ++l)
      if (u.level_heads[l] != u.level_heads[0]) return false;
    return true;
  }() || [&] {
    const int64_t hc = u.model_channels * u.channel_mult[0] / u.level_heads[0];
    for (size_t l = 0; l < u.channel_mult.size(); ++l)
      if (u.model_channels * u.channel_mult[l] != hc * u.level_heads[l]) return false;
    return true;
  }(), c.source, ": per-level heads ", json(u.level_heads).dump(), " follow neither of LDM's rules (num_heads, num_head_channels)");
  int64_t num_heads = u.num_heads, head_ch = u.num_head_channels;
  if (!u.level_heads.empty()) {
    bool same = true;
    for (auto h : u.level_heads) same = same && h == u.level_heads[0];
    if (same) num_heads = u.level_heads[0], head_ch = -1;
    else num_heads = -1, head_ch = u.model_channels * u.channel_mult[0] / u.level_heads[0];
  }
  ojson up;  // the UNet's params
  up["model_channels"] = u.model_channels;
  up["in_channels"] = u.in_channels;
  up["out_channels"] = u.out_channels;
  up["channel_mult"] = u.channel_mult;
  up["num_res_blocks"] = u.num_res_blocks;
  up["attention_resolutions"] = u.attention_resolutions;
  std::vector<int64_t> depth = attention_depths(u);
  if (sgm) {
    up["transformer_depth"] = depth;
  } else {
    for (size_t l = 0; l < depth.size(); ++l) depth[l] = u.transformer_depth[l];
    up["transformer_depth"] = depth;
  }
  up["transformer_depth_middle"] = u.middle_depth();
  if (num_heads > 0) up["num_heads"] = num_heads;
  if (head_ch > 0) up["num_head_channels"] = head_ch;
  up["context_dim"] = u.context_dim;
  up["use_linear_in_transformer"] = u.use_linear_in_transformer;
  up["use_spatial_transformer"] = true;
  up["legacy"] = false;
  if (u.adm_in_channels > 0) {
    up["adm_in_channels"] = u.adm_in_channels;
    up["num_classes"] = "sequential";
  }
  ojson dd;
  const auto& v = c.vae_config;
  check(v.norm_groups == 32, c.source, ": an LDM yaml cannot state VAE norm groups ", v.norm_groups, " (LDM uses 32)");
  check(u.norm_groups == 32, c.source, ": an LDM yaml cannot state UNet norm groups ", u.norm_groups, " (LDM uses 32)");
  dd["double_z"] = true;
  dd["z_channels"] = v.z_channels;
  dd["in_channels"] = v.in_channels;
  dd["out_ch"] = v.out_ch;
  dd["ch"] = v.ch;
  dd["ch_mult"] = v.ch_mult;
  dd["num_res_blocks"] = v.num_res_blocks;
  dd["attn_resolutions"] = ojson::array();
  ojson fs = {{"target", sgm ? "sgm.models.autoencoder.AutoencoderKLInferenceWrapper" : "ldm.models.autoencoder.AutoencoderKL"},
              {"params", {{"embed_dim", v.embed_dim}, {"ddconfig", dd}}}};

  auto embedder = [&](const SdTextEncoder& t, bool second_sgm) {
    ojson e, ep;
    const int64_t L = t.config.layers;
    if (t.name == "clip_l") {
      e["target"] = std::string(sgm ? "sgm.modules.encoders.modules" : "ldm.modules.encoders.modules") + ".FrozenCLIPEmbedder";
      if (t.final_norm) {
        check(t.layer == L, c.source, ": CLIP text layer ", t.layer, " with the final norm has no LDM yaml form");
        ep["layer"] = "last";
      } else {
        ep["layer"] = "hidden";
        ep["layer_idx"] = t.layer;
      }
    } else {
      check(t.layer == L || t.layer == L - 1, c.source, ": OpenCLIP text layer ", t.layer, " has no LDM yaml form");
      ep["layer"] = t.layer == L ? "last" : "penultimate";
      if (second_sgm) {
        e["target"] = "sgm.modules.encoders.modules.FrozenOpenCLIPEmbedder2";
        ep["legacy"] = t.final_norm;
        ep["always_return_pooled"] = true;
      } else {
        check(t.final_norm, c.source, ": LDM's OpenCLIP embedder always applies the final norm");
        e["target"] = "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder";
      }
    }
    e["params"] = ep;
    e["tweedie_text_config"] = ojson::parse(t.config.to_json());
    return e;
  };

  ojson params;
  params["linear_start"] = c.schedule.beta_start;
  params["linear_end"] = c.schedule.beta_end;
  params["timesteps"] = c.schedule.num_train_timesteps;
  params["beta_schedule"] = beta_schedule_to_ldm(c.schedule.beta_schedule);
  params["scale_factor"] = c.vae_config.scaling_factor;
  ojson model;
  if (!sgm) {
    params["parameterization"] = c.prediction;
    params["unet_config"] = {{"target", "ldm.modules.diffusionmodules.openaimodel.UNetModel"}, {"params", up}};
    params["first_stage_config"] = fs;
    check(c.text_encoders.size() == 1, c.source, ": an LDM yaml takes one text encoder");
    params["cond_stage_config"] = embedder(c.text_encoders[0], false);
    model["target"] = "ldm.models.diffusion.ddpm.LatentDiffusion";
  } else {
    params["denoiser_config"] = {
        {"target", "sgm.modules.diffusionmodules.denoiser.DiscreteDenoiser"},
        {"params",
         {{"num_idx", c.schedule.num_train_timesteps},
          {"scaling_config", {{"target", c.prediction == "v" ? "sgm.modules.diffusionmodules.denoiser_scaling.VScaling"
                                                             : "sgm.modules.diffusionmodules.denoiser_scaling.EpsScaling"}}}}}};
    params["network_config"] = {{"target", "sgm.modules.diffusionmodules.openaimodel.UNetModel"}, {"params", up}};
    params["first_stage_config"] = fs;
    ojson models = ojson::array();
    for (size_t i = 0; i < c.text_encoders.size(); ++i) {
      ojson e = embedder(c.text_encoders[i], i == 1);
      e["input_key"] = "txt";
      models.push_back(e);
    }
    for (const char* key : {"original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple"})
      models.push_back({{"input_key", key},
                        {"target", "sgm.modules.encoders.modules.ConcatTimestepEmbedderND"},
                        {"params", {{"outdim", c.size_embed_dim}}}});
    params["conditioner_config"] = {{"target", "sgm.modules.GeneralConditioner"}, {"params", {{"emb_models", models}}}};
    model["target"] = "sgm.models.diffusion.DiffusionEngine";
  }
  model["params"] = params;
  // Written as YAML in block style (JSON's flow style is valid YAML too, but
  // people read these files).
  std::string out;
  std::function<void(const ojson&, int)> emit = [&](const ojson& j, int indent) {
    const std::string pad(size_t(indent), ' ');
    for (auto it = j.begin(); it != j.end(); ++it) {
      const ojson& v = it.value();
      if (v.is_object()) {
        out += pad + it.key() + ":\n";
        emit(v, indent + 2);
      } else if (v.is_array() && !v.empty() && v[0].is_object()) {
        out += pad + it.key() + ":\n";
        for (auto& item : v) {
          std::string sub;
          std::swap(sub, out);
          emit(item, indent + 4);
          std::swap(sub, out);
          sub.replace(size_t(indent), 2, "- ");  // the item's first line starts the sequence entry
          out += sub;
        }
      } else {
        out += pad + it.key() + ": " + v.dump() + "\n";
      }
    }
  };
  emit(ojson{{"model", model}}, 0);
  return out;
}

// ---------------------------------------------------------------- diffusers

namespace {

std::string pad_token_of(const std::string& tok_dir) {
  for (const char* f : {"/special_tokens_map.json", "/tokenizer_config.json"}) {
    const std::string path = tok_dir + f;
    if (!file_exists(path)) continue;
    const json j = read_json_file(path);
    if (!j.is_object() || !j.contains("pad_token")) continue;
    const json& p = j["pad_token"];
    if (p.is_string()) return p.get<std::string>();
    if (p.is_object() && p.contains("content") && p["content"].is_string()) return p["content"].get<std::string>();
    fail(path, ": pad_token must be a string or {\"content\": ...}");
  }
  return "";
}

void apply_diffusers_unet(SdCheckpoint& c, const std::string& path) {
  const json j = read_json_file(path);
  check(j.is_object(), path, ": expected a JSON object");
  const Node n{&j, "", path};
  SdUNetConfig g = c.unet_config;
  const size_t levels = g.channel_mult.size();
  // UNet2DConditionModel options with no counterpart here: their non-default values are refused.
  const std::vector<std::pair<const char*, json>> defaults = {
      {"class_embed_type", nullptr},     {"num_class_embeds", nullptr},     {"time_cond_proj_dim", nullptr},
      {"encoder_hid_dim", nullptr},      {"encoder_hid_dim_type", nullptr}, {"dual_cross_attention", false},
      {"resnet_time_scale_shift", "default"}, {"time_embedding_type", "positional"}, {"act_fn", "silu"},
      {"flip_sin_to_cos", true},         {"freq_shift", 0},                 {"center_input_sample", false},
      {"conv_in_kernel", 3},             {"conv_out_kernel", 3},            {"mid_block_only_cross_attention", nullptr},
      {"reverse_transformer_layers_per_block", nullptr}, {"attention_type", "default"},
      {"class_embeddings_concat", false}, {"time_embedding_act_fn", nullptr}, {"timestep_post_act", nullptr},
      {"cross_attention_norm", nullptr}, {"resnet_skip_time_act", false},   {"resnet_out_scale_factor", 1.0},
      {"mid_block_type", "UNetMidBlock2DCrossAttn"}, {"downsample_padding", 1}, {"mid_block_scale_factor", 1}};
  for (auto& [k, def] : defaults)
    if (j.contains(k) && !j[k].is_null() && j[k] != def && !(j[k].is_number() && def.is_number() && j[k].get<double>() == def.get<double>()))
      n.bad(k, "is not supported (tweedie's SD UNet has " + def.dump() + ")");
  if (j.contains("only_cross_attention")) {
    const json& o = j["only_cross_attention"];
    const bool any = o.is_boolean() ? o.get<bool>() : std::any_of(o.begin(), o.end(), [](const json& e) { return e == true; });
    if (any) n.bad("only_cross_attention", "is not supported");
  }
  if (n.has("time_embedding_dim") && n.integer("time_embedding_dim") != 4 * g.model_channels)
    n.bad("time_embedding_dim", "must be 4 x block_out_channels[0]");
  if (n.has("norm_eps") && n.number("norm_eps") != 1e-5) n.bad("norm_eps", "must be 1e-5");
  // Sizes the weights fix.
  if (n.has("in_channels")) agree(path, "in_channels", n.integer("in_channels"), g.in_channels);
  if (n.has("out_channels")) agree(path, "out_channels", n.integer("out_channels"), g.out_channels);
  if (n.has("block_out_channels")) {
    std::vector<int64_t> boc;
    for (auto m : g.channel_mult) boc.push_back(m * g.model_channels);
    agree(path, "block_out_channels", n.int_list("block_out_channels"), boc);
  }
  if (n.has("layers_per_block")) agree(path, "layers_per_block", n.per_level("layers_per_block", levels), std::vector<int64_t>(levels, g.num_res_blocks));
  if (n.has("cross_attention_dim")) agree(path, "cross_attention_dim", n.integer("cross_attention_dim"), g.context_dim);
  if (n.has("use_linear_projection")) agree(path, "use_linear_projection", n.boolean("use_linear_projection"), g.use_linear_in_transformer);
  // Which levels have cross-attention, as the block types name them (the up path from the deepest level).
  auto block_types = [&](const std::string& key, const std::string& attn_type, const std::string& plain_type, bool up) {
    if (!n.has(key)) return;
    const json& d = j[key];
    check(d.is_array() && d.size() == levels, path, ": ", key, " must list ", levels, " blocks");
    std::vector<int64_t> attn, w;
    for (size_t l = 0; l < levels; ++l) {
      check(d[l] == attn_type || d[l] == plain_type, path, ": ", key, " entry ", d[l].dump(), " is not supported (",
            attn_type, ", ", plain_type, ")");
      attn.push_back(d[l] == attn_type);
      w.push_back(g.depth_at(int64_t(up ? levels - 1 - l : l)) > 0);
    }
    agree(path, key + " (1 = cross-attention)", attn, w);
  };
  block_types("down_block_types", "CrossAttnDownBlock2D", "DownBlock2D", false);
  block_types("up_block_types", "CrossAttnUpBlock2D", "UpBlock2D", true);
  if (n.has("transformer_layers_per_block")) {
    auto t = n.per_level("transformer_layers_per_block", levels);
    for (size_t l = 0; l < levels; ++l)
      if (g.depth_at(int64_t(l)) == 0) t[l] = 0;
    agree(path, "transformer_layers_per_block", t, attention_depths(g));
  }
  const std::string add = n.has("addition_embed_type") ? n.string("addition_embed_type") : "";
  if (!add.empty() && add != "text_time") n.bad("addition_embed_type", "is not supported (only text_time, SDXL's)");
  agree(path, "addition_embed_type text_time (vector conditioning)", !add.empty(), g.adm_in_channels > 0);
  if (!add.empty()) {
    if (n.has("projection_class_embeddings_input_dim"))
      agree(path, "projection_class_embeddings_input_dim", n.integer("projection_class_embeddings_input_dim"), g.adm_in_channels);
    if (n.has("addition_time_embed_dim")) c.size_embed_dim = n.integer("addition_time_embed_dim");
  }
  // What the weights do not show.
  if (n.has("norm_num_groups")) g.norm_groups = n.integer("norm_num_groups");
  const std::string hk = n.has("num_attention_heads") ? "num_attention_heads" : "attention_head_dim";
  if (n.has(hk)) {  // diffusers reads attention_head_dim as the number of heads when num_attention_heads is absent
    g.level_heads = n.per_level(hk, levels);
    g.num_heads = g.level_heads.back(), g.num_head_channels = -1;
  }
  if (n.has("sample_size")) {
    if (j["sample_size"].is_array()) {
      const auto s = n.int_list("sample_size");
      check(s.size() == 2, path, ": sample_size must be an integer or [height, width]");
      g.height = s[0], g.width = s[1];
    } else {
      g.height = g.width = n.integer("sample_size");
    }
  }
  try {
    g.validate();
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  c.unet_config = g;
}

void apply_diffusers_vae(SdCheckpoint& c, const std::string& path) {
  const json j = read_json_file(path);
  check(j.is_object(), path, ": expected a JSON object");
  const Node n{&j, "", path};
  AutoencoderKLConfig& v = c.vae_config;
  if (n.has("block_out_channels")) {
    std::vector<int64_t> boc;
    for (auto m : v.ch_mult) boc.push_back(m * v.ch);
    agree(path, "block_out_channels", n.int_list("block_out_channels"), boc);
  }
  if (n.has("layers_per_block")) agree(path, "layers_per_block", n.integer("layers_per_block"), v.num_res_blocks);
  if (n.has("latent_channels")) agree(path, "latent_channels", n.integer("latent_channels"), v.embed_dim);
  if (n.has("in_channels")) agree(path, "in_channels", n.integer("in_channels"), v.in_channels);
  if (n.has("out_channels")) agree(path, "out_channels", n.integer("out_channels"), v.out_ch);
  if (n.has("shift_factor") && n.number("shift_factor") != 0) n.bad("shift_factor", "is not supported");
  if (n.has("mid_block_add_attention") && !n.boolean("mid_block_add_attention"))
    n.bad("mid_block_add_attention", "must be true");
  if (n.has("norm_num_groups")) v.norm_groups = n.integer("norm_num_groups");
  if (n.has("scaling_factor")) v.scaling_factor = n.number("scaling_factor");
}

void apply_diffusers_text(SdTextEncoder& t, const std::string& path) {
  const json j = read_json_file(path);
  check(j.is_object(), path, ": expected a JSON object");
  const Node n{&j, "", path};
  ClipTextConfig& c = t.config;
  if (n.has("hidden_size")) agree(path, "hidden_size", n.integer("hidden_size"), c.width);
  if (n.has("num_hidden_layers")) agree(path, "num_hidden_layers", n.integer("num_hidden_layers"), c.layers);
  if (n.has("intermediate_size")) agree(path, "intermediate_size", n.integer("intermediate_size"), c.intermediate);
  if (n.has("vocab_size")) agree(path, "vocab_size", n.integer("vocab_size"), c.vocab_size);
  if (n.has("max_position_embeddings"))
    agree(path, "max_position_embeddings", n.integer("max_position_embeddings"), c.max_positions);
  if (n.has("projection_dim") && c.projection_dim > 0)
    agree(path, "projection_dim", n.integer("projection_dim"), c.projection_dim);
  if (n.has("num_attention_heads")) c.heads = n.integer("num_attention_heads");
  if (n.has("hidden_act")) {
    const std::string a = n.string("hidden_act");
    if (a != "gelu" && a != "quick_gelu") n.bad("hidden_act", "is not supported (gelu, quick_gelu)");
    c.activation = a;
  }
  if (n.has("layer_norm_eps")) c.layer_norm_eps = n.number("layer_norm_eps");
  try {
    c.validate();
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  t.configured = n.has("num_attention_heads");
}

}  // namespace

void apply_diffusers_configs(SdCheckpoint& c, const std::string& dir) {
  if (file_exists(dir + "/unet/config.json")) apply_diffusers_unet(c, dir + "/unet/config.json");
  if (!c.vae.empty() && file_exists(dir + "/vae/config.json")) apply_diffusers_vae(c, dir + "/vae/config.json");
  const char* subs[] = {"text_encoder", "text_encoder_2"};
  for (size_t i = 0; i < c.text_encoders.size() && i < 2; ++i) {
    const std::string cfg = dir + "/" + subs[i] + "/config.json";
    if (file_exists(cfg)) apply_diffusers_text(c.text_encoders[i], cfg);
    if (!c.text_encoders[i].tokenizer_dir.empty()) {
      const std::string pad = pad_token_of(c.text_encoders[i].tokenizer_dir);
      if (!pad.empty()) c.text_encoders[i].pad_token = pad;
    }
  }
  if (file_exists(dir + "/scheduler/scheduler_config.json"))
    apply_diffusers_scheduler(c, dir + "/scheduler/scheduler_config.json");
  if (file_exists(dir + "/unet/config.json")) c.config_source = "diffusers config.json";
}

DiffusersConfigs diffusers_configs(const SdCheckpoint& c) {
  const auto& u = c.unet_config;
  const bool xl = c.family == "sdxl";
  const size_t levels = u.channel_mult.size();
  DiffusersConfigs d;
  ojson idx;
  idx["_class_name"] = xl ? "StableDiffusionXLPipeline" : "StableDiffusionPipeline";
  idx["scheduler"] = {"diffusers", "DDIMScheduler"};
  idx["text_encoder"] = {"transformers", "CLIPTextModel"};
  if (xl) idx["text_encoder_2"] = {"transformers", "CLIPTextModelWithProjection"};
  idx["tokenizer"] = {"transformers", "CLIPTokenizer"};
  if (xl) idx["tokenizer_2"] = {"transformers", "CLIPTokenizer"};
  idx["unet"] = {"diffusers", "UNet2DConditionModel"};
  if (!c.vae.empty()) idx["vae"] = {"diffusers", "AutoencoderKL"};
  d.model_index = idx.dump(2);

  ojson j;
  j["_class_name"] = "UNet2DConditionModel";
  j["sample_size"] = u.height == u.width ? ojson(u.height) : ojson({u.height, u.width});
  j["in_channels"] = u.in_channels;
  j["out_channels"] = u.out_channels;
  std::vector<int64_t> boc, heads, depth;
  std::vector<std::string> down, up;
  for (size_t l = 0; l < levels; ++l) {
    boc.push_back(u.model_channels * u.channel_mult[l]);
    heads.push_back(u.heads_at(int64_t(l)).first);
    const int64_t dl = u.depth_at(int64_t(l));
    depth.push_back(std::max<int64_t>(dl, 1));
    down.push_back(dl > 0 ? "CrossAttnDownBlock2D" : "DownBlock2D");
  }
  for (size_t l = levels; l-- > 0;) up.push_back(u.depth_at(int64_t(l)) > 0 ? "CrossAttnUpBlock2D" : "UpBlock2D");
  check(u.middle_depth() == depth.back() || u.depth_at(int64_t(levels - 1)) == 0, c.source,
        ": a middle depth other than the last level's has no diffusers config form");
  if (u.depth_at(int64_t(levels - 1)) == 0) depth.back() = u.middle_depth();
  // The middle block takes the last level's heads in diffusers, as here (heads_at).
  j["block_out_channels"] = boc;
  j["layers_per_block"] = u.num_res_blocks;
  j["down_block_types"] = down;
  j["up_block_types"] = up;
  j["mid_block_type"] = "UNetMidBlock2DCrossAttn";
  j["cross_attention_dim"] = u.context_dim;
  j["attention_head_dim"] = heads;  // diffusers' name for the number of heads
  j["num_attention_heads"] = nullptr;
  j["transformer_layers_per_block"] = depth;
  j["use_linear_projection"] = u.use_linear_in_transformer;
  j["norm_num_groups"] = u.norm_groups;
  j["norm_eps"] = 1e-5;
  j["act_fn"] = "silu";
  j["flip_sin_to_cos"] = true;
  j["freq_shift"] = 0;
  j["upcast_attention"] = c.family == "sd2";
  if (u.adm_in_channels > 0) {
    j["addition_embed_type"] = "text_time";
    j["addition_time_embed_dim"] = c.size_embed_dim;
    j["projection_class_embeddings_input_dim"] = u.adm_in_channels;
  }
  d.unet = j.dump(2);

  if (!c.vae.empty()) {
    const auto& v = c.vae_config;
    ojson vj;
    vj["_class_name"] = "AutoencoderKL";
    std::vector<int64_t> vb;
    std::vector<std::string> vd, vu;
    for (auto m : v.ch_mult) {
      vb.push_back(m * v.ch);
      vd.push_back("DownEncoderBlock2D");
      vu.push_back("UpDecoderBlock2D");
    }
    vj["in_channels"] = v.in_channels;
    vj["out_channels"] = v.out_ch;
    vj["block_out_channels"] = vb;
    vj["down_block_types"] = vd;
    vj["up_block_types"] = vu;
    vj["layers_per_block"] = v.num_res_blocks;
    check(v.z_channels == v.embed_dim, c.source, ": diffusers' AutoencoderKL needs z_channels = embed_dim");
    vj["latent_channels"] = v.embed_dim;
    vj["norm_num_groups"] = v.norm_groups;
    vj["act_fn"] = "silu";
    vj["scaling_factor"] = v.scaling_factor;
    vj["use_quant_conv"] = v.use_quant_conv;
    vj["use_post_quant_conv"] = v.use_quant_conv;
    d.vae = vj.dump(2);
  }

  for (size_t i = 0; i < c.text_encoders.size(); ++i) {
    const auto& t = c.text_encoders[i];
    // diffusers uses the last layer + final norm (non-SDXL; the file then
    // holds only the layers used) or hidden_states[-2] without it (SDXL).
    if (xl) {
      check(t.layer == t.config.layers - 1 && !t.final_norm, c.source, ": text encoder ", t.name, " layer ", t.layer,
            (t.final_norm ? " with" : " without"), " the final norm has no diffusers SDXL form (hidden_states[-2])");
    } else {
      check(t.final_norm, c.source, ": text encoder ", t.name, " without the final norm has no diffusers form");
    }
    ojson tj;
    tj["architectures"] = {t.config.projection_dim > 0 && t.pooled ? "CLIPTextModelWithProjection" : "CLIPTextModel"};
    tj["model_type"] = "clip_text_model";
    tj["vocab_size"] = t.config.vocab_size;
    tj["hidden_size"] = t.config.width;
    tj["intermediate_size"] = t.config.intermediate;
    tj["num_hidden_layers"] = xl ? t.config.layers : t.layer;
    tj["num_attention_heads"] = t.config.heads;
    tj["max_position_embeddings"] = t.config.max_positions;
    tj["hidden_act"] = t.config.activation;
    tj["layer_norm_eps"] = t.config.layer_norm_eps;
    if (t.config.projection_dim > 0) tj["projection_dim"] = t.config.projection_dim;
    d.text_encoders.push_back(tj.dump(2));
    ojson st;
    st["bos_token"] = "<|startoftext|>";
    st["eos_token"] = "<|endoftext|>";
    st["unk_token"] = "<|endoftext|>";
    st["pad_token"] = t.pad_token;
    d.special_tokens.push_back(st.dump(2));
  }

  const auto& s = c.schedule;
  ojson sj;
  sj["_class_name"] = "DDIMScheduler";
  sj["num_train_timesteps"] = s.num_train_timesteps;
  sj["beta_start"] = s.beta_start;
  sj["beta_end"] = s.beta_end;
  sj["beta_schedule"] = s.beta_schedule;
  sj["prediction_type"] = c.prediction == "v" ? "v_prediction" : "epsilon";
  if (!s.timestep_spacing.empty()) sj["timestep_spacing"] = s.timestep_spacing;
  sj["steps_offset"] = s.steps_offset;
  sj["rescale_betas_zero_snr"] = s.rescale_betas_zero_snr;
  sj["clip_sample"] = false;
  sj["set_alpha_to_one"] = false;
  d.scheduler = sj.dump(2);
  return d;
}

void apply_sd_config_file(SdCheckpoint& c, const std::string& path) {
  const std::string text = read_file(path);
  const size_t slash = path.find_last_of('/');
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  const auto ends = [&](const char* e) {
    const std::string s(e);
    return path.size() >= s.size() && path.compare(path.size() - s.size(), s.size(), s) == 0;
  };
  if (ends(".yaml") || ends(".yml")) return apply_ldm_yaml(c, text, name);
  if (ends(".json")) return apply_tweedie_sd_config(c, text, name);
  fail(path, ": --config must be an LDM/SGM .yaml or a tweedie .json config");
}

}  // namespace tweedie
