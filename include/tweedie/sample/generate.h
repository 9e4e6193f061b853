// Generating many samples: a sampler run over a batch of start noise, split
// into chunks so memory stays bounded, and NFE budgets turned into steps.
#pragma once
#include <functional>
#include <vector>

#include <torch/types.h>

#include "tweedie/sample/sampler.h"

namespace tweedie {

// Denoiser evaluations one run of the sampler takes with `steps` steps (it
// depends only on the sampler and the step count; measured by running it on
// a one-value stand-in model).
int nfe_of(const SamplerInfo& s, int steps);
// The most steps whose run takes at most `nfe` evaluations; Error if even one
// step takes more.
int steps_for_nfe(const SamplerInfo& s, int nfe);

struct GenerateOptions {
  SamplerOptions sampler;
  int64_t batch = 0;  // samples per sampler run; 0 = all at once
  // Called after every step of every chunk: (steps done over all chunks, total).
  std::function<void(int64_t, int64_t)> progress;
  // A change of the state before each of the first update_steps steps
  // (attention-loss guidance: Attend-and-Excite, layout guidance; x at level
  // s, the chunk's condition). Those steps run one at a time, so a multistep
  // sampler starts its history afresh after each change (the old history
  // belongs to the state before it); the rest run as one.
  std::function<torch::Tensor(int step, int steps, double s, const torch::Tensor& x, const Cond& c)> update;
  int update_steps = 0;
};

// Number of sampler runs generate() makes for n samples in batches of `batch`.
inline int64_t chunks_of(int64_t n, int64_t batch) { return batch > 0 && batch < n ? (n + batch - 1) / batch : 1; }

struct Generated {
  torch::Tensor x;  // [N, ...] samples at sigmas.back()
  int nfe = 0;      // evaluations per run (per chunk)
};

// Sample from standard-normal `noise` [N, ...] (start state sigmas[0] * noise)
// under condition `cond` (labels [N] / context [N, ...] split with the
// chunks; other entries passed whole). Stochastic samplers draw from gen in
// chunk order, so their output depends on `batch`; deterministic ones do not.
Generated generate(Denoiser& d, const SamplerInfo& s, const std::vector<double>& sigmas, const torch::Tensor& noise,
                   const Cond& cond, const GenerateOptions& opt, torch::Generator gen = {});

}  // namespace tweedie
