// CADS, condition-annealed sampling (Sadat et al. 2024, "CADS: Unleashing the
// Diversity of Diffusion Models through Condition-Annealed Sampling"): at high
// noise the condition is replaced by a noisy version of itself, annealed to
// the clean condition as sampling proceeds, which restores diversity under
// strong guidance:
//   gamma(tau) = 1 for tau <= tau1, (tau2 - tau) / (tau2 - tau1) between, 0 for tau >= tau2
//   y_hat      = sqrt(gamma) y + noise_scale sqrt(1 - gamma) n,   n ~ N(0, I)
//   y_resc     = (y_hat - mean(y_hat)) / std(y_hat) * std(y) + mean(y)
//   y_final    = psi y_resc + (1 - psi) y_hat
// tau is normalized model time (cfg_schedule.h: 1 = pure noise), the paper's
// t in [0, 1]. Defaults are the paper's: tau1 = 0.6, tau2 = 0.9, psi = 1.
//
// Where the noise goes: for class-label networks the condition y is the
// class embedding inside the network, so CADSDenoiser wraps a NetDenoiser and
// rewrites its "label_emb" hook site (the class-embedding output, before it
// is added to the time embedding; UNet and DiT) for the duration of each call.
// Means and standard deviations are per sample over the embedding dimension
// (so a sample does not depend on the others in its batch). Only rows with a
// real class (label >= 0) are noised: the null class is the absence of a
// condition, so CFG's unconditional branch stays the unconditional model (a
// negative class is a condition and is annealed too). Noise is drawn from the
// denoiser's own generator, seeded at construction, one [rows, D] draw per
// call: the same seed gives the same samples, and a batched [cond; null] CFG
// call draws exactly what a cond-only call would.
#pragma once
#include <ATen/core/Generator.h>

#include "tweedie/models/net_denoiser.h"

namespace tweedie {

struct CADSOptions {
  double tau1 = 0.6, tau2 = 0.9;  // 0 <= tau1 < tau2 <= 1
  double noise_scale = 0.25;      // s > 0
  double psi = 1.0;               // rescale mixing in [0, 1]; 0 = no rescale
  void validate() const;          // Error naming the bad value
};

// gamma(tau) above.
double cads_gamma(double tau, double tau1, double tau2);
// y: [N, D] condition embeddings, noise: [N, D] standard normal; the formula above.
torch::Tensor cads_noise_condition(const torch::Tensor& y, const torch::Tensor& noise, double gamma, double noise_scale,
                                   double psi);

class CADSDenoiser : public Denoiser {
 public:
  CADSDenoiser(std::shared_ptr<NetDenoiser> inner, CADSOptions opt, uint64_t seed);
  const Process& process() const override { return inner_->process(); }
  Prediction predict(const torch::Tensor& x, double s, const Cond& c) override;

 private:
  std::shared_ptr<NetDenoiser> inner_;
  CADSOptions opt_;
  at::Generator gen_;
};

}  // namespace tweedie
