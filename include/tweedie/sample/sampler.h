// Sampler: integrates the reverse process over a list of noise levels, one
// Denoiser call per NFE, with a per-step callback.
//
// Every sampler is one function over (SamplerRun&, x) in the style of
// k-diffusion's sampling.py: x is the start state in sampling space
// (x = a(s) x0 + s eps, process.h) at run.sigmas[0], and the function returns
// the state at run.sigmas.back(). Stochastic samplers draw noise only from
// run.gen. Deterministic samplers marked invertible also accept an increasing
// list of levels (starting above 0) and then run the same update backwards:
// that is inversion.
#pragma once
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <torch/types.h>

#include "tweedie/core/method_options.h"
#include "tweedie/core/registry.h"
#include "tweedie/models/denoiser.h"

namespace tweedie {

struct SamplerOptions {
  double eta = -1;         // noise amount; < 0 means the sampler's own default
  double s_noise = 1.0;    // scale of fresh noise (k-diffusion s_noise)
  double s_churn = 0.0;    // Heun/Euler churn (EDM S_churn)
  double s_tmin = 0.0;     // churn only for s in [s_tmin, s_tmax]
  double s_tmax = std::numeric_limits<double>::infinity();
  // The sampler's own options by name (TCD's "gamma", gradient estimation's
  // "ge-gamma"): declared in its registration (SamplerInfo::option) and
  // checked by run_sampler, which hands their values to the run.
  OptionValues own;
  // eta if set, else the given default.
  double eta_or(double dflt) const { return eta >= 0 ? eta : dflt; }
};

struct StepInfo {
  int step;        // 0-based
  int steps;       // total steps
  double s;        // level at the start of the step
  double s_next;   // level at the end
  const torch::Tensor& x;   // state at the end of the step
  const torch::Tensor& x0;  // the denoised estimate used in the step
};
using StepCallback = std::function<void(const StepInfo&)>;

class SamplerRun {
 public:
  SamplerRun(Denoiser& model, std::vector<double> sigmas, Cond cond = {}, SamplerOptions opt = {},
             torch::Generator gen = {});

  Denoiser& model;
  std::vector<double> sigmas;
  Cond cond;
  SamplerOptions opt;
  torch::Generator gen;
  StepCallback callback;
  int nfe = 0;
  // A run that is part of a longer one (generate's state updates run steps
  // one at a time): its step i is step step_offset + i of total_steps for
  // the hooks (HookContext); 0 = this run is the whole one.
  int step_offset = 0, total_steps = 0;
  MethodValues values;  // the running sampler's own options (set by run_sampler from opt.own)

  const Process& process() const { return model.process(); }
  int steps() const { return static_cast<int>(sigmas.size()) - 1; }
  bool inverting() const { return sigmas.size() > 1 && sigmas.back() > sigmas.front(); }
  // One network evaluation (counts NFE; rejects non-finite output).
  Prediction denoise(const torch::Tensor& x, double s);
  // Standard normal noise shaped like x, from gen.
  torch::Tensor randn_like(const torch::Tensor& x);
  // The end of step i: the callback, and the step hooks see moves to i + 1
  // (network calls in between belong to the step in progress: HookContext::step).
  void report(int i, const torch::Tensor& x, const torch::Tensor& x0);
  int step() const { return step_; }
  // EDM churn (Karras et al. 2022, Alg. 2): if opt.s_churn > 0 and s is in
  // [s_tmin, s_tmax], raise the level of x from s to s_hat = s (1 + gamma),
  // gamma = min(s_churn / steps, sqrt 2 - 1), with fresh noise; returns the new
  // level (s itself when nothing is added, e.g. at the flow limit or inverting).
  double churn(torch::Tensor& x, double s);
  // Second half of an ancestral step (Process::ancestral_step): scale the state
  // reached at st.s_down and add st.noise * s_noise * z (z ~ N(0, I) from gen
  // unless given, e.g. Brownian-tree noise).
  torch::Tensor renoise(const torch::Tensor& x_down, const Process::Ancestral& st, torch::Tensor z = {});

 private:
  int step_ = 0;
};

// The DDIM step, the first-order move every solver builds on: the state at
// level s_to with the prediction's x0 and eps, a(s_to) x0 + s_to eps (ddim.cpp).
torch::Tensor ddim_step(const Process& p, const Prediction& pr, double s_to);

using SamplerFn = torch::Tensor (*)(SamplerRun& run, torch::Tensor x);

// A registration: SamplerInfo{name, description, reference, fn} and what it
// is, by name: .ode(2) (deterministic, invertible, second order), .sde()
// (stochastic), .deterministic(1) (not invertible), .alias("dpm_2").
struct SamplerInfo {
  std::string name;          // k-diffusion / stable-diffusion.cpp style: euler-a, dpmpp-2m, ...
  std::string description;   // one line
  std::string reference;     // paper
  SamplerFn fn;
  bool stochastic = false;
  bool invertible = false;   // deterministic and correct on an increasing level list
  int order = 1;             // convergence order of the deterministic update (0: stochastic)
  std::vector<std::string> aliases = {};
  std::vector<MethodOption> options = {};  // its own options (SamplerOptions::own)

  SamplerInfo& deterministic(int k) { stochastic = false, invertible = false, order = k; return *this; }
  SamplerInfo& ode(int k) { deterministic(k).invertible = true; return *this; }
  SamplerInfo& sde() { stochastic = true, invertible = false, order = 0; return *this; }
  SamplerInfo& alias(std::string a) { aliases.push_back(std::move(a)); return *this; }
  SamplerInfo& option(MethodOption o) { options.push_back(std::move(o)); return *this; }
};

template <>
Registry<SamplerInfo>& registry<SamplerInfo>();
using SamplerRegistrar = Registrar<SamplerInfo>;
inline const std::vector<SamplerInfo>& samplers() { return registry<SamplerInfo>().all(); }
// Throws Error listing the known names.
inline const SamplerInfo& find_sampler(const std::string& name) { return registry<SamplerInfo>().find(name); }

// Run a sampler from x at sigmas[0] to sigmas.back(), validating the levels.
torch::Tensor run_sampler(const SamplerInfo& info, SamplerRun& run, torch::Tensor x);
// Invert: run an invertible sampler on the increasing levels (reverse of a
// sampling schedule without its terminal 0). Throws Error for samplers that cannot.
torch::Tensor run_inversion(const SamplerInfo& info, SamplerRun& run, torch::Tensor x);
// Throws the Error run_inversion gives for a sampler that cannot invert.
void require_invertible(const SamplerInfo& info);

}  // namespace tweedie
