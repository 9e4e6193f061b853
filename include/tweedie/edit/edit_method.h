// Edit methods: change what an image shows from a source condition to a
// target one (a class, a prompt) with a diffusion model, each method in its
// own file and registered there by name, like samplers:
//
//   EditMethodRegistrar reg(EditMethodInfo{"sdedit", "one line", "Meng et al. 2022, SDEdit", run}
//                               .strength(0.6));
//
// with what it needs declared by name: .strength(s) its default share of the
// schedule (.no_strength(): it samples from noise), .needs_source() it
// inverts under the source condition, .for_text_models() it acts on
// prompts' words, .from_seed() it can also generate its source from a seed
// (no input), .invertible_sampler() its --sampler must invert (for inputs), .own_sampler() it takes no --sampler, .default_sampler(n),
// and .option(MethodOption{...}) its own settings (core/method_options.h),
// from which `tweedie edit` builds its flags and help. The CLI, `tweedie
// bench edit` and the library call run_edit_method().
// Verified in tests/test_edit.cpp (EditMethods*).
#pragma once
#include <string>
#include <vector>

#include <torch/types.h>

#include "tweedie/core/method_options.h"
#include "tweedie/core/registry.h"
#include "tweedie/models/denoiser.h"
#include "tweedie/models/prompt_weighting.h"

namespace tweedie {

struct EditRequest {
  DenoiserPtr model;            // the unguided model
  std::vector<double> sigmas;   // a sampling schedule ending at 0
  torch::Tensor x;              // [N, ...] states of the sampling space (latents for latent models)
  Cond source, target;          // source: empty when the method needs none
  double strength = 0;          // share of the schedule re-run (the method's default when not given)
  double cfg = 1.0;             // classifier-free guidance toward the target
  std::string sampler;          // the method's default when not given
  MethodValues options;         // the method's own options
  torch::Generator gen;
  // Methods that generate their source (.from_seed()): x is unit noise and
  // the source is sampled from it, not an image to invert.
  bool from_noise = false;
  // Text models: the prompts' words and their context positions
  // (StableDiffusion::word_positions), for methods that act on words.
  std::vector<PromptWord> source_words, target_words;

  // The model with CFG toward the target at `cfg` (the model itself at 1).
  DenoiserPtr guided() const;
};

struct EditResult {
  torch::Tensor edited;  // float32 [N, ...]
  torch::Tensor mask;    // methods that compute one (DiffEdit, P2P's local blending)
  torch::Tensor source;  // methods that produce their source (P2P: the source branch); else undefined
};

using EditFn = EditResult (*)(const EditRequest& r);

struct EditMethodInfo {
  std::string name;
  std::string description;  // one line
  std::string reference;    // paper
  EditFn fn;
  double default_strength = 1.0;
  bool uses_strength = true;
  bool source = false;             // needs the source condition
  bool sampler_must_invert = false;
  bool takes_sampler = true;
  std::string sampler = "ddim";    // default sampler
  std::vector<MethodOption> options = {};
  bool text_only = false;          // acts on prompts' words: text models only
  bool seeds = false;              // can generate its source from a seed (EditRequest::from_noise)

  EditMethodInfo& strength(double s) { default_strength = s; return *this; }
  EditMethodInfo& no_strength() { uses_strength = false; return *this; }
  EditMethodInfo& needs_source() { source = true; return *this; }
  EditMethodInfo& invertible_sampler() { sampler_must_invert = true; return *this; }
  EditMethodInfo& own_sampler() { takes_sampler = false; return *this; }
  EditMethodInfo& default_sampler(std::string s) { sampler = std::move(s); return *this; }
  EditMethodInfo& for_text_models() { text_only = true; return *this; }
  EditMethodInfo& from_seed() { seeds = true; return *this; }
  EditMethodInfo& option(MethodOption o) { options.push_back(std::move(o)); return *this; }

  // Empty values for its options, errors naming `who` (a command).
  MethodValues values(const std::string& who) const { return MethodValues(options, who + " --method " + name); }
};

template <>
Registry<EditMethodInfo>& registry<EditMethodInfo>();
using EditMethodRegistrar = Registrar<EditMethodInfo>;
inline const std::vector<EditMethodInfo>& edit_methods() { return registry<EditMethodInfo>().all(); }
// Error "unknown edit method 'x' (known: ...)".
inline const EditMethodInfo& find_edit_method(const std::string& name) { return registry<EditMethodInfo>().find(name); }

// Validate (a batch of finite states, a schedule ending at 0, strength in
// [0, 1] where the method uses one, the source condition where needed, an
// invertible sampler where needed) and run the method. strength < 0 or an
// empty sampler mean the method's defaults.
EditResult run_edit_method(const EditMethodInfo& m, EditRequest r);

}  // namespace tweedie
