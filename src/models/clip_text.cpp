// CLIP text transformer with Hugging Face parameter names, the OpenCLIP ->
// HF conversion, config inference, strict loading and the per-family
// encoding rules of SD1 / SD2 / SDXL (see include/tweedie/models/clip_text.h).
// Verified in tests/test_clip_text.cpp.
#include "tweedie/models/clip_text.h"

#include <array>
#include <cmath>
#include <map>
#include <limits>
#include <sstream>

#include "../core/config_reader.h"
#include "tweedie/core/error.h"
#include "tweedie/nn/module_weights.h"

namespace tweedie {

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

bool any_key_under(const StateDict& sd, const std::string& prefix) {
  auto it = sd.lower_bound(prefix);
  return it != sd.end() && starts_with(it->first, prefix);
}

// A plain module that only names a level of the parameter tree ("self_attn").
std::shared_ptr<torch::nn::Module> level(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

torch::nn::LayerNorm layer_norm(const ClipTextConfig& c) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.width}).eps(c.layer_norm_eps));
}

const char* kPositionIds = "text_model.embeddings.position_ids";

}  // namespace

// ---------------------------------------------------------------- config

ClipTextConfig ClipTextConfig::clip_l() {
  ClipTextConfig c;
  c.projection_dim = 768;
  return c;
}

ClipTextConfig ClipTextConfig::openclip_h() {
  ClipTextConfig c;
  c.width = 1024, c.layers = 24, c.heads = 16, c.intermediate = 4096, c.projection_dim = 1024;
  c.activation = "gelu";
  return c;
}

ClipTextConfig ClipTextConfig::openclip_bigg() {
  ClipTextConfig c;
  c.width = 1280, c.layers = 32, c.heads = 20, c.intermediate = 5120, c.projection_dim = 1280;
  c.activation = "gelu";
  return c;
}

void ClipTextConfig::validate() const {
  check(vocab_size >= 1 && width >= 1 && layers >= 1 && heads >= 1 && intermediate >= 1 && max_positions >= 1 &&
            projection_dim >= 0,
        "clip text config: sizes must be positive (", describe(), ")");
  check(width % heads == 0, "clip text config: ", heads, " heads do not divide width ", width);
  check(activation == "quick_gelu" || activation == "gelu", "clip text config: activation '", activation,
        "' is not quick_gelu or gelu");
  check(layer_norm_eps > 0, "clip text config: layer_norm_eps must be positive");
}

ClipTextConfig ClipTextConfig::from_json(const std::string& text) {
  detail::ConfigReader r("clip_text", text);
  ClipTextConfig c;
  c.vocab_size = r.integer("vocab_size", c.vocab_size, 1);
  c.width = r.integer("width", c.width, 1);
  c.layers = r.integer("layers", c.layers, 1);
  c.heads = r.integer("heads", c.heads, 1);
  c.intermediate = r.integer("intermediate", c.intermediate, 1);
  c.max_positions = r.integer("max_positions", c.max_positions, 1);
  c.projection_dim = r.integer("projection_dim", c.projection_dim, 0);
  c.activation = r.string("activation", c.activation);
  c.layer_norm_eps = r.positive("layer_norm_eps", c.layer_norm_eps);
  r.finish();
  c.validate();
  return c;
}

std::string ClipTextConfig::to_json() const {
  nlohmann::ordered_json j;
  j["vocab_size"] = vocab_size;
  j["width"] = width;
  j["layers"] = layers;
  j["heads"] = heads;
  j["intermediate"] = intermediate;
  j["max_positions"] = max_positions;
  j["projection_dim"] = projection_dim;
  j["activation"] = activation;
  j["layer_norm_eps"] = layer_norm_eps;
  return j.dump();
}

std::string ClipTextConfig::describe() const {
  std::ostringstream o;
  o << "width " << width << ", " << layers << " layers, " << heads << " heads, " << activation;
  if (projection_dim > 0) o << ", projection " << projection_dim;
  return o.str();
}

ClipTextConfig infer_clip_text_config(const StateDict& sd, const std::string& prefix, const std::string& activation,
                                      int64_t head_dim) {
  auto get = [&](const std::string& name, int64_t dim) -> const torch::Tensor& {
    auto it = sd.find(prefix + name);
    check(it != sd.end(), "text encoder: missing '", prefix + name, "' (not a CLIP text encoder in the Hugging Face layout)");
    check(it->second.dim() == dim, "text encoder: '", prefix + name, "' has shape ", it->second.sizes(),
          ", expected ", dim, " dimensions");
    return it->second;
  };
  ClipTextConfig c;
  const auto& tok = get("text_model.embeddings.token_embedding.weight", 2);
  c.vocab_size = tok.size(0);
  c.width = tok.size(1);
  c.max_positions = get("text_model.embeddings.position_embedding.weight", 2).size(0);
  c.intermediate = get("text_model.encoder.layers.0.mlp.fc1.weight", 2).size(0);
  const std::string lp = prefix + "text_model.encoder.layers.";
  int64_t layers = 0;
  for (auto it = sd.lower_bound(lp); it != sd.end() && starts_with(it->first, lp); ++it) {
    const std::string rest = it->first.substr(lp.size());
    const size_t dot = rest.find('.');
    const std::string num = rest.substr(0, dot);
    check(!num.empty() && num.size() < 6 && num.find_first_not_of("0123456789") == std::string::npos,
          "text encoder: unexpected key '", it->first, "'");
    layers = std::max<int64_t>(layers, std::stoll(num) + 1);
  }
  c.layers = layers;
  auto proj = sd.find(prefix + "text_projection.weight");
  c.projection_dim = proj == sd.end() ? 0 : get("text_projection.weight", 2).size(0);
  check(head_dim >= 1 && c.width % head_dim == 0, "text encoder: width ", c.width, " is not a multiple of the head size ",
        head_dim);
  c.heads = c.width / head_dim;
  c.activation = !activation.empty() ? activation : c.width == 768 ? "quick_gelu" : "gelu";
  c.validate();
  return c;
}

// ---------------------------------------------------------------- OpenCLIP -> HF

bool is_openclip_layout(const StateDict& sd, const std::string& prefix) {
  return any_key_under(sd, prefix + "transformer.resblocks.");
}

StateDict openclip_to_hf(const StateDict& sd, const std::string& src_prefix, const std::string& dst_prefix) {
  static const std::pair<const char*, const char*> kBlockNames[] = {{"ln_1.", "layer_norm1."},
                                                                    {"ln_2.", "layer_norm2."},
                                                                    {"attn.out_proj.", "self_attn.out_proj."},
                                                                    {"mlp.c_fc.", "mlp.fc1."},
                                                                    {"mlp.c_proj.", "mlp.fc2."}};
  const std::string tm = dst_prefix + "text_model.";
  StateDict out;
  for (const auto& [key, t] : sd) {
    if (!starts_with(key, src_prefix)) {
      out[key] = t;
      continue;
    }
    const std::string s = key.substr(src_prefix.size());
    if (s == "logit_scale" || s == "attn_mask") continue;  // the contrastive scale; a causal-mask buffer
    if (s == "token_embedding.weight") {
      out[tm + "embeddings.token_embedding.weight"] = t;
    } else if (s == "positional_embedding") {
      out[tm + "embeddings.position_embedding.weight"] = t;
    } else if (starts_with(s, "ln_final.")) {
      out[tm + "final_layer_norm." + s.substr(9)] = t;
    } else if (s == "text_projection") {
      check(t.dim() == 2, key, ": expected a [width, projection] matrix, got shape ", t.sizes());
      out[dst_prefix + "text_projection.weight"] = t.t().contiguous();
    } else if (starts_with(s, "transformer.resblocks.")) {
      const std::string rest = s.substr(22);
      const size_t dot = rest.find('.');
      check(dot != std::string::npos && dot > 0, key, ": not a resblock parameter");
      const std::string layer = tm + "encoder.layers." + rest.substr(0, dot) + ".";
      const std::string r = rest.substr(dot + 1);
      if (r == "attn.in_proj_weight" || r == "attn.in_proj_bias") {
        check(t.dim() >= 1 && t.size(0) % 3 == 0, key, ": shape ", t.sizes(),
              " cannot be split into q, k, v");
        const auto qkv = t.chunk(3, 0);
        const std::string kind = r == "attn.in_proj_weight" ? "weight" : "bias";
        const char* names[] = {"q_proj.", "k_proj.", "v_proj."};
        for (int i = 0; i < 3; ++i) out[layer + "self_attn." + names[i] + kind] = qkv[size_t(i)].contiguous();
      } else {
        std::string hf = r;  // unknown names keep their suffix, so loading reports them
        for (auto& [from, to] : kBlockNames)
          if (starts_with(r, from)) hf = to + r.substr(std::string(from).size());
        out[layer + hf] = t;
      }
    } else {
      out[dst_prefix + s] = t;
    }
  }
  return out;
}

StateDict hf_to_openclip(const StateDict& sd) {
  static const std::pair<const char*, const char*> kBlockNames[] = {{"layer_norm1.", "ln_1."},
                                                                    {"layer_norm2.", "ln_2."},
                                                                    {"self_attn.out_proj.", "attn.out_proj."},
                                                                    {"mlp.fc1.", "mlp.c_fc."},
                                                                    {"mlp.fc2.", "mlp.c_proj."}};
  const std::string tm = "text_model.", layers = "text_model.encoder.layers.";
  StateDict out;
  std::map<std::string, std::array<torch::Tensor, 3>> qkv;  // "N.attn.in_proj_weight" -> q, k, v
  for (const auto& [key, t] : sd) {
    if (key == tm + "embeddings.token_embedding.weight") {
      out["token_embedding.weight"] = t;
    } else if (key == tm + "embeddings.position_embedding.weight") {
      out["positional_embedding"] = t;
    } else if (key == tm + "embeddings.position_ids") {
      continue;
    } else if (starts_with(key, tm + "final_layer_norm.")) {
      out["ln_final." + key.substr(tm.size() + 17)] = t;
    } else if (key == "text_projection.weight") {
      out["text_projection"] = t.t().contiguous();
    } else if (starts_with(key, layers)) {
      const std::string rest = key.substr(layers.size());
      const size_t dot = rest.find('.');
      check(dot != std::string::npos && dot > 0, key, ": not a layer parameter");
      const std::string n = rest.substr(0, dot), r = rest.substr(dot + 1);
      const std::string block = "transformer.resblocks." + n + ".";
      bool done = false;
      const char* parts[] = {"self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj."};
      for (int i = 0; i < 3 && !done; ++i)
        if (starts_with(r, parts[i])) {
          qkv[block + "attn.in_proj_" + r.substr(std::string(parts[i]).size())][size_t(i)] = t;
          done = true;
        }
      for (auto& [from, to] : kBlockNames)
        if (!done && starts_with(r, from)) {
          out[block + to + r.substr(std::string(from).size())] = t;
          done = true;
        }
      check(done, key, ": no OpenCLIP name for this parameter");
    } else {
      fail(key, ": no OpenCLIP name for this parameter");
    }
  }
  for (auto& [name, p] : qkv) {
    check(p[0].defined() && p[1].defined() && p[2].defined(), name, ": q, k and v are not all present");
    out[name] = torch::cat({p[0], p[1], p[2]}, 0);
  }
  return out;
}

bool is_legacy_hf_layout(const StateDict& sd, const std::string& prefix) {
  return !any_key_under(sd, prefix + "text_model.") && any_key_under(sd, prefix + "embeddings.") &&
         any_key_under(sd, prefix + "encoder.");
}

// ---------------------------------------------------------------- modules

ClipEncoderLayerImpl::ClipEncoderLayerImpl(const ClipTextConfig& c)
    : heads_(c.heads), quick_gelu_(c.activation == "quick_gelu") {
  auto attn = level(*this, "self_attn");
  q_proj = attn->register_module("q_proj", torch::nn::Linear(c.width, c.width));
  k_proj = attn->register_module("k_proj", torch::nn::Linear(c.width, c.width));
  v_proj = attn->register_module("v_proj", torch::nn::Linear(c.width, c.width));
  out_proj = attn->register_module("out_proj", torch::nn::Linear(c.width, c.width));
  layer_norm1 = register_module("layer_norm1", layer_norm(c));
  auto mlp = level(*this, "mlp");
  fc1 = mlp->register_module("fc1", torch::nn::Linear(c.width, c.intermediate));
  fc2 = mlp->register_module("fc2", torch::nn::Linear(c.intermediate, c.width));
  layer_norm2 = register_module("layer_norm2", layer_norm(c));
}

torch::Tensor ClipEncoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& causal_mask) {
  const int64_t B = x.size(0), L = x.size(1), W = x.size(2), H = heads_, d = W / H;
  auto h = layer_norm1->forward(x);
  auto q = q_proj->forward(h).view({B, L, H, d}).transpose(1, 2);
  auto k = k_proj->forward(h).view({B, L, H, d}).transpose(1, 2);
  auto v = v_proj->forward(h).view({B, L, H, d}).transpose(1, 2);
  auto scores = torch::matmul(q, k.transpose(-2, -1)).to(torch::kFloat32) * (1.0 / std::sqrt(double(d))) + causal_mask;
  auto probs = torch::softmax(scores, -1).to(x.scalar_type());
  auto o = torch::matmul(probs, v).transpose(1, 2).reshape({B, L, W});
  auto y = x + out_proj->forward(o);
  auto m = fc1->forward(layer_norm2->forward(y));
  m = quick_gelu_ ? m * torch::sigmoid(1.702 * m) : torch::gelu(m);
  return y + fc2->forward(m);
}

ClipTextModelImpl::ClipTextModelImpl(const ClipTextConfig& c) : cfg_(c) {
  c.validate();
  auto text_model = level(*this, "text_model");
  auto embeddings = level(*text_model, "embeddings");
  token_embedding = embeddings->register_module("token_embedding", torch::nn::Embedding(c.vocab_size, c.width));
  position_embedding = embeddings->register_module("position_embedding", torch::nn::Embedding(c.max_positions, c.width));
  auto encoder = level(*text_model, "encoder");
  layers = encoder->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.layers; ++i) layers->push_back(ClipEncoderLayer(c));
  final_layer_norm = text_model->register_module("final_layer_norm", layer_norm(c));
  if (c.projection_dim > 0)
    text_projection = register_module("text_projection",
                                      torch::nn::Linear(torch::nn::LinearOptions(c.width, c.projection_dim).bias(false)));
}

torch::ScalarType ClipTextModelImpl::dtype() const { return token_embedding->weight.scalar_type(); }
torch::Device ClipTextModelImpl::device() const { return token_embedding->weight.device(); }

ClipTextOutput ClipTextModelImpl::forward(const torch::Tensor& ids, int64_t clip_skip, bool final_norm, bool pooled) {
  check(ids.dim() == 2 && ids.size(1) >= 1 && ids.size(1) <= cfg_.max_positions && ids.size(0) >= 1,
        "text encoder: token ids must be [B, L] with 1 <= L <= ", cfg_.max_positions, ", got ", ids.sizes());
  check(clip_skip >= 1 && clip_skip <= cfg_.layers, "text encoder: clip skip ", clip_skip, " is not in [1, ",
        cfg_.layers, "] for a ", cfg_.layers, "-layer encoder");
  const auto idx = ids.to(device(), torch::kInt64);
  const int64_t lo = idx.min().item<int64_t>(), hi = idx.max().item<int64_t>();
  check(lo >= 0 && hi < cfg_.vocab_size, "text encoder: token id ", lo < 0 ? lo : hi, " is outside the vocabulary [0, ",
        cfg_.vocab_size, ")");
  const int64_t L = idx.size(1);
  auto x = token_embedding->forward(idx) + position_embedding->weight.narrow(0, 0, L);
  const auto mask = torch::full({L, L}, -std::numeric_limits<float>::infinity(),
                                torch::TensorOptions().dtype(torch::kFloat32).device(x.device()))
                        .triu(1);
  const int64_t stop = cfg_.layers - clip_skip + 1;  // layers before the chosen hidden states
  torch::Tensor hidden;
  for (int64_t i = 0; i < cfg_.layers; ++i) {
    if (i == stop) {
      hidden = x;
      if (!pooled) break;
    }
    x = layers[size_t(i)]->as<ClipEncoderLayer>()->forward(x, mask);
  }
  if (!hidden.defined()) hidden = x;
  ClipTextOutput out;
  out.hidden = final_norm ? final_layer_norm->forward(hidden) : hidden;
  if (pooled) {
    auto last = final_norm && stop == cfg_.layers ? out.hidden : final_layer_norm->forward(x);
    auto eos_rows = last.index({torch::arange(idx.size(0), idx.options()), idx.argmax(-1)});
    out.pooled = text_projection ? text_projection->forward(eos_rows) : eos_rows;
  }
  return out;
}

// ---------------------------------------------------------------- loading

void load_clip_text_weights(ClipTextModel& model, const StateDict& sd, const std::string& prefix) {
  load_module_weights(*model, sd, "text encoder '" + prefix + "' (CLIP, " + model->config().describe() + ")", prefix,
                      {prefix + kPositionIds});
}

ClipTextModel load_clip_text(const StateDict& sd, const std::string& prefix, const std::string& activation,
                             torch::ScalarType dtype, torch::Device device, int64_t head_dim) {
  // Other layouts are renamed into the HF one, under no prefix.
  StateDict renamed;
  std::string how;
  const bool openclip = is_openclip_layout(sd, prefix);
  if (openclip) {
    renamed = openclip_to_hf(with_prefix_removed(sd, prefix), "", "");
    how = " (converted from the OpenCLIP layout under '" + prefix + "')";
  } else if (is_legacy_hf_layout(sd, prefix)) {
    for (auto& [k, t] : with_prefix_removed(sd, prefix)) {
      const bool text_model = starts_with(k, "embeddings.") || starts_with(k, "encoder.") || starts_with(k, "final_layer_norm.");
      renamed[text_model ? "text_model." + k : k] = t;
    }
    how = " (renamed from the layout without 'text_model.' under '" + prefix + "')";
  }
  const StateDict& hf = how.empty() ? sd : renamed;
  const std::string p = how.empty() ? prefix : "";
  ClipTextConfig cfg;
  try {
    cfg = infer_clip_text_config(hf, p, activation.empty() && openclip ? "gelu" : activation, head_dim);
  } catch (const Error& e) {
    fail(e.what(), how);
  }
  ClipTextModel model(cfg);
  try {
    load_clip_text_weights(model, hf, p);
  } catch (const Error& e) {
    fail(e.what(), how);
  }
  model->to(device, dtype);
  model->eval();
  return model;
}

// ---------------------------------------------------------------- encoding

TextEncoding encode_windows(ClipTextModel& model, const PromptWindows& windows, int64_t clip_skip, bool final_norm,
                            bool pooled, bool emphasis_normalize) {
  torch::NoGradGuard g;
  auto out = model->forward(windows.ids, clip_skip, final_norm, pooled);
  auto z = apply_emphasis(out.hidden, windows.weights, emphasis_normalize);
  TextEncoding e;
  e.context = z.reshape({1, z.size(0) * z.size(1), z.size(2)});
  if (pooled) e.pooled = out.pooled.narrow(0, 0, 1);
  return e;
}

TextEncoderSet::TextEncoderSet(ClipTokenizer tok, std::vector<Encoder> encoders)
    : tok_(std::move(tok)), encoders_(std::move(encoders)) {
  check(!encoders_.empty(), "text encoders: none given");
  int pooling = 0;
  for (const auto& e : encoders_) {
    const int64_t layers = e.model->config().layers;
    check(e.layer >= 1 && e.layer <= layers, "text encoders: layer ", e.layer, " is not in [1, ", layers, "]");
    check(e.pad_id >= 0 && e.pad_id < e.model->config().vocab_size, "text encoders: padding id ", e.pad_id,
          " is outside the vocabulary of ", e.model->config().vocab_size);
    if (e.pooled) {
      ++pooling;
      check(e.model->config().projection_dim > 0,
            "text encoders: the pooling encoder has no text_projection (needed for the pooled embedding)");
    }
  }
  check(pooling <= 1, "text encoders: at most one encoder gives the pooled embedding");
}

TextEncoderSet TextEncoderSet::sd1(ClipTokenizer tok, ClipTextModel clip_l) {
  const int64_t layers = clip_l->config().layers, eos = tok.eos();
  return TextEncoderSet(std::move(tok), {{clip_l, eos, layers, true, false}});
}

TextEncoderSet TextEncoderSet::sd2(ClipTokenizer tok, ClipTextModel openclip_h, bool truncated) {
  const int64_t layers = openclip_h->config().layers;
  check(truncated || layers >= 2, "SD2 text encoder: needs at least 2 layers, has ", layers);
  return TextEncoderSet(std::move(tok), {{openclip_h, 0, truncated ? layers : layers - 1, true, false}});
}

TextEncoderSet TextEncoderSet::sdxl(ClipTokenizer tok, ClipTextModel clip_l, ClipTextModel openclip_bigg) {
  check(clip_l->config().layers >= 2 && openclip_bigg->config().layers >= 2, "SDXL text encoders: need at least 2 layers");
  const int64_t eos = tok.eos();
  std::vector<Encoder> e = {{clip_l, eos, clip_l->config().layers - 1, false, false},
                            {openclip_bigg, 0, openclip_bigg->config().layers - 1, false, true}};
  return TextEncoderSet(std::move(tok), std::move(e));
}

int64_t TextEncoderSet::context_dim() const {
  int64_t d = 0;
  for (const auto& e : encoders_) d += e.model->config().width;
  return d;
}

TextEncoding TextEncoderSet::encode(const std::string& prompt, int64_t clip_skip, const ChunkOptions& opt) const {
  check(clip_skip >= 1, "clip skip must be >= 1, got ", clip_skip);
  const auto chunks = chunk_prompt(tok_, prompt, opt);
  std::vector<torch::Tensor> contexts;
  TextEncoding out;
  for (const auto& e : encoders_) {
    const int64_t layers = e.model->config().layers, blocks = e.layer - (clip_skip - 1);
    check(blocks >= 1, "clip skip ", clip_skip, " goes past the first layer of a ", layers, "-layer text encoder");
    ClipTextModel model = e.model;
    auto enc = encode_windows(model, prompt_windows(chunks, tok_.bos(), tok_.eos(), e.pad_id), layers - blocks + 1,
                              e.final_norm, e.pooled);
    contexts.push_back(contexts.empty() ? enc.context : enc.context.to(contexts[0].scalar_type()));
    if (e.pooled) out.pooled = enc.pooled;
  }
  out.context = contexts.size() == 1 ? contexts[0] : torch::cat(contexts, -1);
  return out;
}

}  // namespace tweedie
