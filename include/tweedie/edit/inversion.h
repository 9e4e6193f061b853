// Inversion: map data to the latent a sampler would start from, so that
// decoding it (under the same condition) gives the data back, and decoding it
// under another condition edits the data.
//
// Levels. Every method takes a sampling schedule as make_schedule returns it
// (decreasing, ending at 0) and treats the data as the state at its lowest
// positive level, as `tweedie invert` does (an eps or v network says nothing
// at s = 0). The inversion visits the schedule without its terminal 0, from
// the bottom up; the latent is the state at the top, and decoding runs the
// same levels down to the lowest positive one. An edit of strength t in
// [0, 1] runs the last round(t * steps) steps of the schedule only
// (schedule_tail; diffusers' img2img convention): t = 0 leaves the data as
// it is, t = 1 goes up to the top.
//
// Methods (one file each in src/edit/, registered by name):
//   ddim             run_inversion of any invertible sampler (DDIM by
//                    default) at guidance scale w (inversion.cpp)
//   edict            EDICT, exact coupled inversion (edict.cpp)
//   fixed-point      exact DDIM inversion by fixed-point iteration with
//                    Anderson acceleration (fixed_point_inversion.cpp)
//   null-text        null-text inversion: per-step null-class embeddings
//                    optimized so CFG at w follows the w = 1 path
//                    (null_text_inversion.cpp)
//   negative-prompt  the source condition as CFG's negative branch
//                    (negative_prompt_inversion.cpp)
//   ddpm, cycle      edit-friendly DDPM inversion and CycleDiffusion's
//                    DPM-encoder: per-step noises that make DDPM sampling
//                    reproduce the data (ddpm_inversion.cpp)
// Each decodes under any condition: the source one reconstructs, another
// edits. Guidance (CFG at InversionOptions::cfg) is built by the methods
// around the base denoiser they are given, since some of them (null-text,
// negative-prompt) change what its negative branch is.
//
// States are held in float64 whatever the input dtype (the network still runs
// in its own dtype): at the top of a VP schedule the sampling-space state is
// ~s_max = 2e4 times the noise, and float32 there would lose the data's
// low-order bits that exact inversions keep. Latents and decodings are
// float64.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "tweedie/core/registry.h"
#include "tweedie/models/denoiser.h"
#include "tweedie/sample/sampler.h"

namespace tweedie {

struct InversionOptions {
  double cfg = 1.0;               // CFG scale w for inversion and decoding (1 = the conditional model)
  std::string sampler = "ddim";   // ddim, negative-prompt: the invertible sampler to run backwards (and forwards)
  SamplerOptions sampler_options; // ... and its options
  double edict_p = 0.93;          // edict: mixing weight p in (0, 1]
  double tol = 1e-6;              // fixed-point: stop when the RMS residual of every sample is below this
  int max_iter = 50;              // fixed-point: iterations per step at most
  int anderson = 5;               // fixed-point: Anderson history length (0 = plain iteration)
  int inner_steps = 10;           // null-text: Adam steps per level at most
  double lr = 0.1;                // null-text: Adam learning rate (decays as 1 - i/100 over steps i;
                                  // the paper's 1e-2 is for CLIP text embeddings, 0.1 suits class embeddings)
  double eta = 1.0;               // ddpm, cycle: noise fraction of each decoding step (1 = DDPM)
  torch::Generator gen;           // ddpm, cycle: where their noise comes from (and a stochastic sampler's)
  // Called after each step of an inversion or decoding: (steps done, total).
  std::function<void(int, int)> progress;
};

struct Inversion {
  std::string method;
  std::vector<double> sigmas;             // decoding levels, decreasing, no 0: latent at [0], data at back()
  torch::Tensor latent;                   // float64 state at sigmas[0]
  torch::Tensor latent_aux;               // edict: the second sequence y at sigmas[0]
  std::vector<torch::Tensor> trajectory;  // ddim, null-text (its pivot): the state at each sigmas[i]
  std::vector<torch::Tensor> noises;      // ddpm: z of step i (sigmas[i] -> sigmas[i+1])
  std::vector<torch::Tensor> null_embeddings;  // null-text: the null-class embedding [N, D] of step i
  std::vector<int> iterations;            // fixed-point: iterations of step i
  std::vector<double> residuals;          // fixed-point: the final RMS residual of step i (largest over samples)
  Cond source;                            // the condition the data was inverted under
  InversionOptions options;               // the options it was made with (decoding takes the
                                          // method's own settings from here, the cfg scale from its caller)
  int nfe = 0;                            // denoiser evaluations the inversion took
  int steps() const { return static_cast<int>(sigmas.size()) - 1; }
};

// Invert x [N, ...] under condition c over `sigmas` (a sampling schedule ending at 0).
using InvertFn = Inversion (*)(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x,
                               const Cond& c, const InversionOptions& o);
// Decode an inversion under condition c (the source: reconstruction; another:
// an edit) at guidance scale o.cfg; the method's other settings (sampler,
// edict_p, eta) are those the inversion was made with.
using DecodeFn = torch::Tensor (*)(const DenoiserPtr& model, const Inversion& inv, const Cond& c,
                                   const InversionOptions& o);

struct InversionMethodInfo {
  std::string name;
  std::string description;  // one line
  std::string reference;    // paper
  InvertFn invert;
  DecodeFn decode;
  bool exact = false;       // reconstructs to float precision (at every guidance scale)

  InversionMethodInfo& reconstructs_exactly() { exact = true; return *this; }
};

template <>
Registry<InversionMethodInfo>& registry<InversionMethodInfo>();
using InversionMethodRegistrar = Registrar<InversionMethodInfo>;
inline const std::vector<InversionMethodInfo>& inversion_methods() { return registry<InversionMethodInfo>().all(); }
// Error listing the known names.
inline const InversionMethodInfo& find_inversion_method(const std::string& name) {
  return registry<InversionMethodInfo>().find(name);
}

// find_inversion_method(method).invert / .decode, with the input validated
// (finite, a batch, a condition of the batch's size, a schedule ending at 0).
Inversion invert(const std::string& method, const DenoiserPtr& model, const std::vector<double>& sigmas,
                 const torch::Tensor& x, const Cond& c, const InversionOptions& o = {});
torch::Tensor decode(const DenoiserPtr& model, const Inversion& inv, const Cond& c, const InversionOptions& o = {});

// The last round(strength * steps) steps of a schedule (with its terminal 0):
// where an edit of this strength starts. Error unless strength is in [0, 1].
std::vector<double> schedule_tail(const std::vector<double>& sigmas, double strength);

// ---- shared by the methods (inversion.cpp) ----------------------------------
namespace edit_detail {
// The denoiser an inversion runs: model itself at w = 1, else CFG at w.
DenoiserPtr guided(const DenoiserPtr& model, double w);
// Validates and returns the decoding levels: sigmas without the terminal 0.
std::vector<double> levels(const std::vector<double>& sigmas);
// An Inversion with its method, levels, source and options filled in.
Inversion start(const std::string& method, const std::vector<double>& sigmas, const Cond& c, const InversionOptions& o);
// The first-order step that moves x from level s to s_to with a fixed noise
// estimate eps: a(s_to) x0 + s_to eps with x0 the data x and eps imply at s
// (ddim_step on an eps-prediction). Moving back with the same eps undoes it.
torch::Tensor transport(const Process& p, const torch::Tensor& x, const torch::Tensor& eps, double s, double s_to);
// Decode inv.latent with a plain sampler run of d over inv.sigmas under c
// (progress through o.progress, noise from o.gen).
torch::Tensor sample_down(Denoiser& d, const Inversion& inv, const Cond& c, const InversionOptions& o,
                          const std::string& sampler, const SamplerOptions& sopt = {});
// A SamplerRun's callback that reports progress through o.progress.
StepCallback progress_callback(const InversionOptions& o, int offset, int total);
// Run a sampler and, after each step i, replace its state (the state at
// run.sigmas[i + 1]) by edit(i, state): DiffEdit's blending and ILVR's
// low-pass replacement ride on an unmodified sampler this way. Error if the
// sampler does not continue from the state it reports.
torch::Tensor run_with_step_edit(const SamplerInfo& info, SamplerRun& run, torch::Tensor x,
                                 const std::function<torch::Tensor(int, const torch::Tensor&)>& edit);
}  // namespace edit_detail

}  // namespace tweedie
