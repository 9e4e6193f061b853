// Improved precision and recall (Kynkäänniemi, Karras, Laine, Lehtinen &
// Aila 2019, "Improved Precision and Recall Metric for Assessing Generative
// Models", NeurIPS): each feature set stands for the manifold of its
// distribution as the union of balls around its points, each ball reaching
// the point's k-th nearest neighbour in the same set (k = 3 in the paper).
//   precision = share of generated points inside the real manifold (quality)
//   recall    = share of real points inside the generated manifold (diversity)
// A point on a ball's boundary counts as inside (the reference code's <=).
// The two sets should be of equal size: the radii shrink as a set grows.
// Verified in tests/test_eval.cpp against a pairwise brute force and closed
// cases (identical sets, disjoint sets, a collapsed generator).
#pragma once
#include <cstdint>

#include <torch/types.h>

namespace tweedie {

struct PrecisionRecall {
  double precision = 0, recall = 0;
};

// Distance from every row of `points` [N, D] to its k-th nearest other row
// (float64 [N]); N must exceed k.
torch::Tensor knn_radii(const torch::Tensor& points, int64_t k);

// real: [N, D], fake: [M, D] features; both sets need more than k points.
PrecisionRecall precision_recall(const torch::Tensor& real, const torch::Tensor& fake, int64_t k = 3);

}  // namespace tweedie
