// Fréchet distance between Gaussians fitted to two feature sets (Heusel et
// al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local
// Nash Equilibrium" — FID):
//   d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)
// The matrix square roots come from symmetric eigendecompositions in float64
// (eigenvalues clamped at 0), which is exact for PSD covariances and avoids
// scipy.linalg.sqrtm's complex round-off. Covariances use 1/(n-1), as numpy's
// np.cov in the reference implementations (pytorch-fid, torch-fidelity).
// Verified in tests/test_eval.cpp against closed forms (diagonal and
// commuting covariances, a rotated pair) and d(P, P) = 0.
#pragma once
#include <cstdint>

#include <torch/types.h>

namespace tweedie {

struct FeatureStats {
  torch::Tensor mean;  // float64 [D]
  torch::Tensor cov;   // float64 [D, D]
  int64_t n = 0;
  static FeatureStats of(const torch::Tensor& features);  // [N, D], N >= 2
};

double frechet_distance(const FeatureStats& a, const FeatureStats& b);

}  // namespace tweedie
