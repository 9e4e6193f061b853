// LoRA files for Stable Diffusion (Hu et al. 2021, "LoRA: Low-Rank
// Adaptation"): W' = W + strength * (alpha / r) * up @ down, with down
// [r, in] and up [out, r] for a Linear, down [r, in, kh, kw] and up
// [out, r, 1, 1] for a conv (LoCon; the product is reshaped to W's shape).
//
// Key formats understood (per module; the module's parameter is <path>.weight):
//   kohya / A1111   lora_unet_<LDM path with '_'>.{lora_down,lora_up}.weight, .alpha
//                   lora_unet_<diffusers path with '_'>... (the diffusers-naming variant)
//                   lora_te_<HF path with '_'> (SD1/SD2), lora_te1_ / lora_te2_ (SDXL)
//   diffusers/PEFT  unet.<diffusers path>.{lora_A,lora_B}.weight,
//                   unet.<path>.lora.{down,up}.weight, .lora_linear_layer.{down,up}.weight,
//                   unet.<attn>.processor.{to_q,to_k,to_v,to_out}_lora.{down,up}.weight,
//                   text_encoder.<HF path>..., text_encoder_2.<HF path>... (old
//                   attention-processor files without "unet." too); an
//                   optional <path>.alpha (absent: alpha = r, scale = strength)
// Underscored names are resolved against the model's own parameter names
// (each one with '.' -> '_', in LDM and in diffusers spelling), so they are
// never guessed. Targets are canonical: component "unet" with LDM names,
// "te1"/"te2" with Hugging Face CLIP names (models/sd_checkpoint.h).
// LoHa/LoKr/DoRA/Tucker keys (hada_*, lokr_*, dora_scale, lora_mid) are an
// Error naming the key, as is a module whose target does not exist or whose
// shape does not fit.
// Verified in tests/test_sd_checkpoint.cpp (Lora*): merged weights equal
// W + scale * up @ down for linear and conv targets; kohya (LDM and
// diffusers naming) and PEFT files of the same LoRA give identical entries;
// errors name the key.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "tweedie/io/state_dict.h"

namespace tweedie {

struct SdCheckpoint;

struct LoraEntry {
  std::string component;  // "unet", "te1", "te2"
  std::string target;     // e.g. "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
  std::string source;     // the LoRA module key it came from (for messages)
  torch::Tensor down, up;
  std::optional<double> alpha;
  std::vector<int64_t> target_shape;

  int64_t rank() const { return down.size(0); }
  double scale(double strength) const { return strength * (alpha ? *alpha / double(rank()) : 1.0); }
  // scale(strength) * up @ down, float32, shaped like the target (for runtime
  // application without merging, or for merging).
  torch::Tensor delta(double strength) const;
};

// The parameter names (and shapes) LoRA modules may target, per component.
struct LoraTargets {
  const StateDict* unet = nullptr;  // LDM names
  const StateDict* te1 = nullptr;   // HF names (CLIP-L, or OpenCLIP-H for SD2)
  const StateDict* te2 = nullptr;   // HF names (SDXL's bigG)
};
LoraTargets lora_targets(const SdCheckpoint& ckpt);

// Entries in the order of the LoRA file's sorted module names.
std::vector<LoraEntry> map_lora(const StateDict& lora, const LoraTargets& targets, const std::string& where);

// W += delta for every entry of `component` (in float32, written back in W's
// dtype; W is replaced, not modified in place, so mapped files stay intact).
void merge_lora(StateDict& weights, const std::string& component, const std::vector<LoraEntry>& entries, double strength);
// All components of a checkpoint.
void merge_lora(SdCheckpoint& ckpt, const std::vector<LoraEntry>& entries, double strength);

}  // namespace tweedie
