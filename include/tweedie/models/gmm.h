// Exact Gaussian-mixture denoiser.
//
// Data x0 ~ sum_k w_k N(mu_k, diag(v_k)), optionally with a class label per
// component. Under any process x = a x0 + s eps, so given component k,
// x ~ N(a mu_k, a^2 v_k + s^2) and
//   E[x0 | x, k] = mu_k + a v_k / (a^2 v_k + s^2) (x - a mu_k),
// the posterior mean is the responsibility-weighted sum of these (Tweedie's
// formula, in closed form). Conditioning on a class restricts the mixture to
// that class's components. Every sampler and guidance rule can be checked
// against exact answers with it.
//
// JSON: {"shape": [C,H,W] or [D], "weights": [K], "means": [[D] x K],
//        "variances": [[D] x K], "classes": [K] (optional)}
#pragma once
#include <string>
#include <vector>

#include "tweedie/models/denoiser.h"

namespace tweedie {

struct GaussianMixture {
  std::vector<int64_t> shape;     // per-sample shape; prod(shape) = D
  torch::Tensor weights;          // [K] float64, sums to 1
  torch::Tensor means;            // [K, D] float64
  torch::Tensor variances;        // [K, D] float64, > 0
  std::vector<int64_t> classes;   // [K] or empty

  int64_t dim() const { return means.size(1); }
  int64_t components() const { return means.size(0); }
  int64_t num_classes() const;    // 0 if unlabelled

  static GaussianMixture load(const std::string& path);  // validates, throws Error naming the file
  void save(const std::string& path) const;

  // Exact samples of x0 (float32, [n, shape...]); label >= 0 restricts to that class.
  torch::Tensor sample(int64_t n, torch::Generator gen, int64_t label = -1) const;
  // Mean and covariance of x0 (optionally of one class), float64, [D] and [D, D].
  torch::Tensor mean(int64_t label = -1) const;
  torch::Tensor covariance(int64_t label = -1) const;
  // Exact posterior mean E[x0 | x] at level s under process p, float64 math.
  torch::Tensor posterior_mean(const torch::Tensor& x, double s, const Process& p, const torch::Tensor& labels) const;
  // Exact log density of x at level s (for tests and likelihoods).
  torch::Tensor log_prob(const torch::Tensor& x, double s, const Process& p, const torch::Tensor& labels) const;
};

class GMMDenoiser : public Denoiser {
 public:
  GMMDenoiser(GaussianMixture m, ProcessPtr p) : gmm_(std::move(m)), proc_(std::move(p)) {}
  const Process& process() const override { return *proc_; }
  Prediction predict(const torch::Tensor& x, double s, const Cond& c) override;
  const GaussianMixture& mixture() const { return gmm_; }

 private:
  GaussianMixture gmm_;
  ProcessPtr proc_;
};

}  // namespace tweedie
