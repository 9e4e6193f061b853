// Saving Stable Diffusion checkpoints (see models/sd_export.h).
#include "tweedie/models/sd_export.h"

#include <unistd.h>

#include <filesystem>
#include <map>

#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/safetensors.h"
#include "tweedie/models/sd_config.h"

namespace tweedie {
namespace {

namespace fs = std::filesystem;
using Tensors = std::vector<std::pair<std::string, torch::Tensor>>;

torch::Tensor converted(const torch::Tensor& t, const SdSaveOptions& o) {
  torch::Tensor x = o.dtype && t.is_floating_point() ? t.to(*o.dtype) : t;
  return x.contiguous();
}

void add(Tensors& out, const StateDict& sd, const std::string& prefix, const SdSaveOptions& o) {
  for (auto& [k, v] : sd) out.emplace_back(prefix + k, converted(v, o));
}

// The LDM/SGM prefix of text encoder i of the family, and whether it is stored in OpenCLIP names.
std::pair<std::string, bool> ldm_text_prefix(const SdCheckpoint& c, size_t i) {
  if (c.family == "sd1") return {"cond_stage_model.transformer.", false};
  if (c.family == "sd2") return {"cond_stage_model.model.", true};
  return {i == 0 ? "conditioner.embedders.0.transformer." : "conditioner.embedders.1.model.", i == 1};
}

Tensors single_file_tensors(const SdCheckpoint& c, const SdSaveOptions& o) {
  Tensors t;
  add(t, c.unet, "model.diffusion_model.", o);
  add(t, c.vae, "first_stage_model.", o);
  const size_t expected = c.family == "sdxl" ? 2 : 1;
  check(c.text_encoders.size() == expected, c.source, ": a ", c.family, " checkpoint has ", expected,
        " text encoder(s), this one ", c.text_encoders.size());
  for (size_t i = 0; i < c.text_encoders.size(); ++i) {
    const auto [prefix, openclip] = ldm_text_prefix(c, i);
    add(t, openclip ? hf_to_openclip(c.text_encoders[i].weights) : c.text_encoders[i].weights, prefix, o);
  }
  return t;
}

// A text encoder's weights without the layers it does not use (>= keep).
StateDict first_layers(const StateDict& sd, int64_t keep) {
  const std::string lp = "text_model.encoder.layers.";
  StateDict out;
  for (auto& [k, v] : sd) {
    if (k.compare(0, lp.size(), lp) == 0 && std::stoll(k.substr(lp.size(), k.find('.', lp.size()) - lp.size())) >= keep)
      continue;
    out.emplace(k, v);
  }
  return out;
}

void save_dict(const std::string& path, const StateDict& sd, const SdSaveOptions& o) {
  Tensors t;
  add(t, sd, "", o);
  save_safetensors(path, t);
}

void save_diffusers(const SdCheckpoint& c, const std::string& dir, const SdSaveOptions& o) {
  check(!fs::exists(dir), dir, ": already exists; choose a new folder");
  const DiffusersConfigs cfg = diffusers_configs(c);  // Errors before anything is written
  const std::string tmp = dir + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    const bool xl = c.family == "sdxl";
    for (const char* sub : {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}) fs::create_directories(tmp + "/" + sub);
    write_file_atomic(tmp + "/model_index.json", cfg.model_index);
    write_file_atomic(tmp + "/unet/config.json", cfg.unet);
    save_dict(tmp + "/unet/diffusion_pytorch_model.safetensors", ldm_unet_to_diffusers(c.unet, c.source), o);
    if (!c.vae.empty()) {
      write_file_atomic(tmp + "/vae/config.json", cfg.vae);
      save_dict(tmp + "/vae/diffusion_pytorch_model.safetensors", ldm_vae_to_diffusers(c.vae, c.source), o);
    }
    for (size_t i = 0; i < c.text_encoders.size(); ++i) {
      const auto& te = c.text_encoders[i];
      const std::string s = i == 0 ? "" : "_" + std::to_string(i + 1);
      fs::create_directories(tmp + "/text_encoder" + s);
      fs::create_directories(tmp + "/tokenizer" + s);
      write_file_atomic(tmp + "/text_encoder" + s + "/config.json", cfg.text_encoders[i]);
      save_dict(tmp + "/text_encoder" + s + "/model.safetensors", xl ? te.weights : first_layers(te.weights, te.layer), o);
      write_file_atomic(tmp + "/tokenizer" + s + "/special_tokens_map.json", cfg.special_tokens[i]);
      const std::string from = !o.tokenizer.empty() ? o.tokenizer : te.tokenizer_dir;
      if (!from.empty())
        for (const char* f : {"vocab.json", "merges.txt"}) write_file_atomic(tmp + "/tokenizer" + s + "/" + f, read_file(from + "/" + f));
    }
    write_file_atomic(tmp + "/scheduler/scheduler_config.json", cfg.scheduler);
    fs::rename(tmp, dir);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    fail(dir, ": ", e.what());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace

SdForm sd_form_from_string(const std::string& s) {
  if (s == "ldm") return SdForm::Ldm;
  if (s == "diffusers") return SdForm::Diffusers;
  if (s == "tweedie") return SdForm::Tweedie;
  fail("unknown checkpoint form '", s, "' (expected ldm, diffusers or tweedie)");
}

void save_sd_checkpoint(const SdCheckpoint& c, const std::string& path, SdForm form, const SdSaveOptions& o) {
  if (form == SdForm::Diffusers) return save_diffusers(c, path, o);
  check(ends_with(path, ".safetensors"), path, ": a single-file checkpoint is written as .safetensors");
  if (form == SdForm::Ldm) {
    const std::string yaml = ldm_yaml(c);  // Errors before anything is written
    save_safetensors(path, single_file_tensors(c, o), o.metadata);
    write_file_atomic(path.substr(0, path.size() - std::string(".safetensors").size()) + ".yaml", yaml);
    return;
  }
  auto meta = o.metadata;
  meta["tweedie.sd"] = tweedie_sd_config(c);
  save_safetensors(path, single_file_tensors(c, o), meta);
}

}  // namespace tweedie
