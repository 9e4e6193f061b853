// Denoiser: network + parameterization (+ conditioning) -> Prediction.
//
// Samplers see only this interface. Analytic denoisers (the exact Gaussian-
// mixture posterior mean) and neural ones implement it alike, and guidance
// rules are Denoisers built from Denoisers.
#pragma once
#include <map>
#include <memory>
#include <string>

#include <torch/types.h>

#include "tweedie/process/prediction.h"
#include "tweedie/process/process.h"

namespace tweedie {

// Conditioning passed through to the network. Empty fields mean "none".
struct Cond {
  torch::Tensor labels;   // int64 [N] class labels; -1 = the null class (unconditional)
  torch::Tensor context;  // [N, L, D] cross-attention context (text embeddings)
  std::map<std::string, torch::Tensor> extra;

  // The unconditional counterpart of this condition (labels -> -1, context
  // -> extra["null_context"] if stored, else zeros; every other extra entry
  // "null_K" gives entry K its unconditional value, e.g. SDXL's "null_y").
  // Used by classifier-free guidance.
  Cond null_like() const;
  // This condition and `other` stacked along the batch (this first), so two
  // branches can run in one network call. Extra entries that are the same
  // tensor in both (shared, not per-sample) are kept once.
  Cond concat(const Cond& other) const;
  bool empty() const { return !labels.defined() && !context.defined() && extra.empty(); }
};

class Denoiser {
 public:
  virtual ~Denoiser() = default;
  virtual const Process& process() const = 0;
  // x: state in sampling space (see process.h), batch first; s > 0.
  virtual Prediction predict(const torch::Tensor& x, double s, const Cond& c) = 0;
};

using DenoiserPtr = std::shared_ptr<Denoiser>;

}  // namespace tweedie
