// Improved precision and recall (include/tweedie/eval/precision_recall.h).
// Distances are taken in float64, a block of rows at a time, so 10 000 x
// 10 000 sets need no more than a block's worth of memory.
#include "tweedie/eval/precision_recall.h"

#include <algorithm>

#include "tweedie/core/error.h"

namespace tweedie {
namespace {

constexpr int64_t kBlock = 1024;

torch::Tensor as_points(const torch::Tensor& x, const char* what) {
  check(x.defined() && x.dim() == 2 && x.size(0) >= 1 && x.size(1) >= 1, "precision/recall: ", what,
        " features must be a non-empty [N, D] matrix");
  auto d = x.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  check(torch::isfinite(d).all().item<bool>(), "precision/recall: the ", what, " features contain NaN or infinity");
  return d;
}

// Pairwise Euclidean distances of rows a[i0 : i0 + rows] to all rows of b.
torch::Tensor distances(const torch::Tensor& a, int64_t i0, int64_t rows, const torch::Tensor& b) {
  auto blk = a.narrow(0, i0, rows);
  // |a|^2 + |b|^2 - 2 a.b in float64, clamped at 0 against round-off.
  auto d2 = blk.pow(2).sum(1, true) + b.pow(2).sum(1).unsqueeze(0) - 2 * blk.matmul(b.t());
  return d2.clamp_min(0).sqrt();
}

// Share of the rows of `query` that lie in some ball (centres, radii).
double share_inside(const torch::Tensor& query, const torch::Tensor& centres, const torch::Tensor& radii) {
  int64_t inside = 0;
  for (int64_t i = 0; i < query.size(0); i += kBlock) {
    const int64_t rows = std::min(kBlock, query.size(0) - i);
    inside += (distances(query, i, rows, centres) <= radii.unsqueeze(0)).any(1).sum().item<int64_t>();
  }
  return double(inside) / double(query.size(0));
}

torch::Tensor radii_of(const torch::Tensor& p, int64_t k) {
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < p.size(0); i += kBlock) {
    const int64_t rows = std::min(kBlock, p.size(0) - i);
    auto d = distances(p, i, rows, p);
    // The point itself is at distance 0 (up to round-off): set it apart, then the
    // k-th smallest of the rest.
    d.narrow(1, i, rows).fill_diagonal_(-1.0);
    out.push_back(std::get<0>(d.kthvalue(k + 1, 1)));
  }
  return torch::cat(out);
}

}  // namespace

torch::Tensor knn_radii(const torch::Tensor& points, int64_t k) {
  check(k >= 1, "precision/recall: k must be >= 1, got ", k);
  auto p = as_points(points, "the");
  check(p.size(0) > k, "precision/recall: ", p.size(0), " points are too few for the ", k,
        "-th nearest neighbour (need more than k)");
  return radii_of(p, k);
}

PrecisionRecall precision_recall(const torch::Tensor& real, const torch::Tensor& fake, int64_t k) {
  check(k >= 1, "precision/recall: k must be >= 1, got ", k);
  auto r = as_points(real, "real"), f = as_points(fake, "generated");
  check(r.size(1) == f.size(1), "precision/recall: real features have ", r.size(1), " dimensions, generated ",
        f.size(1));
  check(r.size(0) > k && f.size(0) > k, "precision/recall: ", r.size(0), " real and ", f.size(0),
        " generated points are too few for k = ", k, " (need more than k of each)");
  PrecisionRecall out;
  out.precision = share_inside(f, r, radii_of(r, k));
  out.recall = share_inside(r, f, radii_of(f, k));
  return out;
}

}  // namespace tweedie
