// Saving Stable Diffusion checkpoints in the forms people use, so a model
// tweedie trained or converted loads in other tools, and any model moves
// between forms (`tweedie convert`):
//   ldm        one .safetensors in the original LDM/SGM single-file layout
//              (model.diffusion_model.*, first_stage_model.*,
//              cond_stage_model.transformer.* / cond_stage_model.model.* /
//              conditioner.embedders.{0,1}.*; OpenCLIP towers in OpenCLIP
//              names) + <name>.yaml beside it (models/sd_config.h: ldm_yaml)
//   diffusers  a folder: model_index.json, unet/, vae/, text_encoder[_2]/
//              (a non-SDXL encoder holds only the layers it uses, as
//              diffusers' SD2 conversion does), tokenizer[_2]/ (copied from
//              SdSaveOptions::tokenizer when given), scheduler/
//   tweedie    the ldm single file with the whole architecture in its
//              "tweedie.sd" metadata entry (no yaml needed)
// Files are written to a temporary name and renamed; a folder is built
// beside the target and renamed into place (an existing target is an Error).
// Verified in tests/test_sd_checkpoint.cpp (SdConfig*): each form loads back
// to the same checkpoint and the same outputs.
#pragma once
#include <map>
#include <optional>
#include <string>

#include <torch/types.h>

#include "tweedie/models/sd_checkpoint.h"

namespace tweedie {

enum class SdForm { Ldm, Diffusers, Tweedie };
SdForm sd_form_from_string(const std::string& s);  // "ldm" | "diffusers" | "tweedie"

struct SdSaveOptions {
  std::string tokenizer;                   // diffusers: a folder with vocab.json + merges.txt to copy
  std::optional<torch::ScalarType> dtype;  // convert floating weights (fp16/bf16/fp32)
  std::map<std::string, std::string> metadata;  // single files: extra safetensors metadata entries
};

void save_sd_checkpoint(const SdCheckpoint& c, const std::string& path, SdForm form, const SdSaveOptions& o = {});

}  // namespace tweedie
