// LoRA (Hu et al. 2021) key mapping for SD (kohya/A1111 and diffusers/PEFT
// formats) onto canonical parameter names, and merging W += scale * up @ down.
// See models/sd_lora.h; verified in tests/test_sd_checkpoint.cpp (Lora*).
#include "tweedie/models/sd_lora.h"

#include <map>

#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/models/sd_checkpoint.h"

namespace tweedie {

namespace {

bool starts(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

std::string underscored(std::string s) {
  std::replace(s.begin(), s.end(), '.', '_');
  return s;
}

std::string module_of(const std::string& param) { return param.substr(0, param.size() - std::strlen(".weight")); }

// A component's module paths (params ending in .weight) by spelling:
// dotted canonical, underscored canonical and (UNet) dotted/underscored diffusers.
struct Names {
  std::map<std::string, std::string> by_key;  // any accepted spelling -> canonical module path
};

Names names_of(const StateDict* sd, bool unet, const std::string& where) {
  Names n;
  if (!sd) return n;
  auto add = [&](const std::string& spelled, const std::string& canonical) {
    n.by_key.emplace(spelled, canonical);
    n.by_key.emplace(underscored(spelled), canonical);
  };
  for (auto& [k, v] : *sd)
    if (ends_with(k, ".weight")) add(module_of(k), module_of(k));
  if (unet)
    for (auto& [ldm, diffusers] : ldm_unet_diffusers_names(*sd, where))
      if (ends_with(ldm, ".weight")) add(module_of(diffusers), module_of(ldm));
  return n;
}

struct Suffix {
  const char* text;
  enum Role { Down, Up, Alpha } role;
};
// Longest first where one ends another.
const Suffix kSuffixes[] = {{".lora_linear_layer.down.weight", Suffix::Down},
                            {".lora_linear_layer.up.weight", Suffix::Up},
                            {".lora_down.weight", Suffix::Down},
                            {".lora_up.weight", Suffix::Up},
                            {".lora_A.weight", Suffix::Down},
                            {".lora_B.weight", Suffix::Up},
                            {"_lora.down.weight", Suffix::Down},  // attention processors: to_q_lora.down.weight
                            {"_lora.up.weight", Suffix::Up},
                            {".lora.down.weight", Suffix::Down},
                            {".lora.up.weight", Suffix::Up},
                            {".alpha", Suffix::Alpha}};
const char* const kUnsupported[] = {"hada_", "lokr_", "dora_scale", "lora_mid", "lora_magnitude"};

struct Module {
  torch::Tensor down, up, alpha;
  std::string first_key;
};

}  // namespace

torch::Tensor LoraEntry::delta(double strength) const {
  const auto u = up.flatten(1).to(torch::kFloat32), d = down.flatten(1).to(torch::kFloat32);
  return torch::matmul(u, d).mul_(scale(strength)).reshape(target_shape);
}

LoraTargets lora_targets(const SdCheckpoint& ckpt) {
  LoraTargets t;
  t.unet = &ckpt.unet;
  if (!ckpt.text_encoders.empty()) t.te1 = &ckpt.text_encoders[0].weights;
  if (ckpt.text_encoders.size() > 1) t.te2 = &ckpt.text_encoders[1].weights;
  return t;
}

std::vector<LoraEntry> map_lora(const StateDict& lora, const LoraTargets& targets, const std::string& where) {
  // 1. group keys by module
  std::map<std::string, Module> modules;
  for (auto& [key, t] : lora) {
    bool unsupported = ends_with(key, ".diff") || ends_with(key, ".diff_b");
    for (const char* u : kUnsupported) unsupported = unsupported || key.find(u) != std::string::npos;
    if (unsupported)
        fail(where, ": unsupported LoRA variant in key '", key, "' (only plain LoRA/LoCon down/up pairs are supported)");
    const Suffix* s = nullptr;
    for (auto& c : kSuffixes)
      if (ends_with(key, c.text)) {
        s = &c;
        break;
      }
    if (!s) fail(where, ": '", key, "' is not a LoRA key (expected <module>.lora_down/lora_up/lora_A/lora_B.weight or .alpha)");
    std::string mod = key.substr(0, key.size() - std::strlen(s->text));
    if (ends_with(std::string(s->text), "_lora.down.weight") || ends_with(std::string(s->text), "_lora.up.weight")) {
      // unet.<attn>.processor.to_q_lora -> unet.<attn>.to_q (to_out_lora -> to_out.0)
      const size_t p = mod.rfind(".processor.");
      if (p == std::string::npos) fail(where, ": '", key, "' is not a LoRA key");
      std::string proj = mod.substr(p + 11);
      mod = mod.substr(0, p) + "." + (proj == "to_out" ? "to_out.0" : proj);
    }
    Module& m = modules[mod];
    if (m.first_key.empty()) m.first_key = key;
    torch::Tensor& slot = s->role == Suffix::Down ? m.down : s->role == Suffix::Up ? m.up : m.alpha;
    if (slot.defined()) fail(where, ": two LoRA tensors for the same role of module '", mod, "' ('", key, "')");
    slot = t;
  }
  // 2. resolve each module against the targets
  const Names unet = names_of(targets.unet, true, where), te1 = names_of(targets.te1, false, where),
              te2 = names_of(targets.te2, false, where);
  struct Route {
    const char* prefix;
    const char* component;
    const Names* names;
    const StateDict* sd;
  };
  const Route routes[] = {{"lora_unet_", "unet", &unet, targets.unet},   {"lora_te1_", "te1", &te1, targets.te1},
                          {"lora_te2_", "te2", &te2, targets.te2},       {"lora_te_", "te1", &te1, targets.te1},
                          {"unet.", "unet", &unet, targets.unet},        {"text_encoder_2.", "te2", &te2, targets.te2},
                          {"text_encoder.", "te1", &te1, targets.te1}};
  std::vector<LoraEntry> out;
  for (auto& [mod, m] : modules) {
    if (!m.down.defined() || !m.up.defined())
      fail(where, ": LoRA module '", mod, "' lacks its ", m.down.defined() ? "up" : "down", " weight");
    const Route* r = nullptr;
    for (auto& c : routes)
      if (starts(mod, c.prefix)) {
        r = &c;
        break;
      }
    // old diffusers attention-processor files name UNet modules without "unet."
    const Route bare{"", "unet", &unet, targets.unet};
    if (!r && (starts(mod, "down_blocks.") || starts(mod, "mid_block.") || starts(mod, "up_blocks."))) r = &bare;
    if (!r) fail(where, ": LoRA key '", m.first_key, "' names no known component (expected lora_unet_, lora_te_, lora_te1_, lora_te2_, unet., text_encoder., text_encoder_2.)");
    if (!r->sd) fail(where, ": LoRA key '", m.first_key, "' targets ", r->component, ", which this model does not have");
    const std::string path = mod.substr(std::strlen(r->prefix));
    auto found = r->names->by_key.find(path);
    if (found == r->names->by_key.end())
      fail(where, ": LoRA key '", m.first_key, "' targets '", path, "', which is not a ", r->component, " parameter of this model");
    LoraEntry e;
    e.component = r->component;
    e.target = found->second + ".weight";
    e.source = mod;
    e.down = m.down;
    e.up = m.up;
    if (m.alpha.defined()) {
      if (m.alpha.numel() != 1) fail(where, ": LoRA alpha '", mod, ".alpha' is not a scalar");
      e.alpha = m.alpha.to(torch::kFloat64).item<double>();
    }
    const torch::Tensor& w = r->sd->at(e.target);
    e.target_shape = w.sizes().vec();
    const int64_t rank = m.down.dim() > 0 ? m.down.size(0) : 0;
    const bool fits = m.down.dim() >= 2 && m.up.dim() >= 2 && rank > 0 && m.up.size(1) == rank &&
                      m.up.numel() == m.up.size(0) * rank && w.dim() >= 1 && m.up.size(0) == w.size(0) &&
                      m.down.numel() / rank == w.numel() / w.size(0);
    if (!fits)
      fail(where, ": LoRA module '", mod, "' (down ", torch::IntArrayRef(m.down.sizes()), ", up ",
           torch::IntArrayRef(m.up.sizes()), ") does not fit ", e.component, " '", e.target, "' of shape ",
           torch::IntArrayRef(w.sizes()));
    out.push_back(std::move(e));
  }
  return out;
}

void merge_lora(StateDict& weights, const std::string& component, const std::vector<LoraEntry>& entries, double strength) {
  torch::NoGradGuard g;
  for (auto& e : entries) {
    if (e.component != component) continue;
    auto it = weights.find(e.target);
    if (it == weights.end()) fail("LoRA '", e.source, "': target ", component, " '", e.target, "' does not exist");
    if (it->second.sizes().vec() != e.target_shape)
      fail("LoRA '", e.source, "': target ", component, " '", e.target, "' has shape ",
           torch::IntArrayRef(it->second.sizes()), ", the LoRA was mapped for ", torch::IntArrayRef(e.target_shape));
    const torch::Tensor& w = it->second;
    it->second = (w.to(torch::kFloat32) + e.delta(strength).to(w.device())).to(w.scalar_type());
  }
}

void merge_lora(SdCheckpoint& ckpt, const std::vector<LoraEntry>& entries, double strength) {
  const size_t tes = ckpt.text_encoders.size();
  for (auto& e : entries)  // before anything changes
    if ((e.component == "te1" && tes < 1) || (e.component == "te2" && tes < 2))
      fail("LoRA '", e.source, "' targets ", e.component, ", which this ", ckpt.family, " model does not have");
  merge_lora(ckpt.unet, "unet", entries, strength);
  if (tes > 0) merge_lora(ckpt.text_encoders[0].weights, "te1", entries, strength);
  if (tes > 1) merge_lora(ckpt.text_encoders[1].weights, "te2", entries, strength);
}

}  // namespace tweedie
