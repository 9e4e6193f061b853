// Prediction: what a network said at (x, s), in the parameterization it was
// trained with, convertible losslessly to every other one given the Process.
// This is the only place that converts between eps, x0 (Tweedie's formula),
// v, flow velocity, score and EDM's F.
//
// In sampling space x = a x0 + s eps (process.h); in the model's space
// x_t = alpha_t x0 + sigma_t eps with x_t = x * model_scale(s). Definitions:
//   eps       the noise:                  x0 = (x - s eps) / a
//   x0        the clean data (Tweedie):   E[x0 | x_t] = (x_t + sigma_t^2 score) / alpha_t
//   v         alpha_t eps - sigma_t x0:   x0 = (alpha_t x_t - sigma_t v) / (alpha_t^2 + sigma_t^2)
//   velocity  eps - x0 (rectified flow):  x0 = (x - s u) / (a + s)
//   score     grad log p(x_t) = -eps / sigma_t
//   edm       F with x0 = c_skip x + c_out F (Karras et al. 2022; Plain space only)
#pragma once
#include <string>

#include <torch/types.h>

#include "tweedie/process/process.h"

namespace tweedie {

enum class PredKind { Eps, X0, V, Velocity, Score, EDM };
PredKind pred_kind_from_string(const std::string& s);  // "eps", "x0", "v", "velocity"/"flow", "score", "edm"
std::string to_string(PredKind k);

struct Parameterization {
  PredKind kind = PredKind::Eps;
  double sigma_data = 0.5;  // EDM preconditioning only

  // Network input scale c_in applied to the model-space state (1 except EDM:
  // 1/sqrt(s^2 + sigma_data^2)).
  double c_in(double s) const;
  // EDM coefficients (in sampling space, s = sigma).
  double c_skip(double s) const;
  double c_out(double s) const;
};

class Prediction {
 public:
  // value: the network output (or analytic answer) in parameterization p, for
  // the state x (sampling space) at noise level s of process proc.
  Prediction(const Parameterization& p, torch::Tensor value, torch::Tensor x, double s, const Process& proc);
  static Prediction from_x0(torch::Tensor x0, torch::Tensor x, double s, const Process& proc) {
    return Prediction({PredKind::X0}, std::move(x0), std::move(x), s, proc);
  }

  const torch::Tensor& x0() const { return x0_; }
  const torch::Tensor& eps() const { return eps_; }
  torch::Tensor v() const;
  torch::Tensor velocity() const;
  torch::Tensor score() const;
  torch::Tensor as(const Parameterization& p) const;  // convert to another parameterization

  // The network target in parameterization p for a training pair (x0, eps) at
  // level s: what a perfect network would output.
  static torch::Tensor target(const Parameterization& p, const torch::Tensor& x0, const torch::Tensor& eps, double s,
                              const Process& proc);

  const torch::Tensor& x() const { return x_; }
  double s() const { return s_; }

  // The noise estimate a sampler should re-noise with. Equal to eps() except
  // under CFG++ style guidance, which sets it to the unconditional eps.
  const torch::Tensor& renoise_eps() const { return renoise_.defined() ? renoise_ : eps_; }
  void set_renoise_eps(torch::Tensor e) { renoise_ = std::move(e); }

  // Auxiliary fields: what a guidance rule hands the sampler beside x0/eps
  // (today the renoise eps). Every field lives here, so carry_aux moves all
  // of them: GuidanceRule (guide/guidance_rule.h) carries an inner
  // prediction's fields into its result where the rule set none of its own
  // (detached from any graph; fields of another batch shape are not taken).
  struct Aux {
    torch::Tensor renoise;
  };
  Aux aux() const { return {renoise_}; }
  void carry_aux(const Aux& from) {
    if (!renoise_.defined() && from.renoise.defined() && from.renoise.sizes() == eps_.sizes())
      renoise_ = from.renoise.detach();
  }

 private:
  torch::Tensor x_, x0_, eps_, renoise_;
  double s_, a_, scale_;
};

}  // namespace tweedie
