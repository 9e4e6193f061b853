// Fréchet distance (include/tweedie/eval/fid.h).
#include "tweedie/eval/fid.h"

#include "tweedie/core/error.h"

namespace tweedie {

FeatureStats FeatureStats::of(const torch::Tensor& features) {
  check(features.dim() == 2 && features.size(0) >= 2, "feature statistics need [N, D] with N >= 2, got ",
        features.sizes());
  auto f = features.to(torch::kFloat64);
  check(torch::isfinite(f).all().item<bool>(), "features contain NaN or infinity");
  FeatureStats s;
  s.n = f.size(0);
  s.mean = f.mean(0);
  auto c = f - s.mean;
  s.cov = c.t().mm(c) / double(s.n - 1);
  return s;
}

namespace {
// Symmetric PSD square root through eigh (negative round-off eigenvalues -> 0).
torch::Tensor psd_sqrt(const torch::Tensor& m) {
  auto [w, v] = torch::linalg::eigh((m + m.t()) / 2, "L");
  return (v * w.clamp_min(0).sqrt().unsqueeze(0)).mm(v.t());
}
}  // namespace

double frechet_distance(const FeatureStats& a, const FeatureStats& b) {
  check(a.mean.defined() && b.mean.defined() && a.mean.sizes() == b.mean.sizes(),
        "Fréchet distance: the feature sets have different dimensions");
  auto r1 = psd_sqrt(a.cov);
  auto mid = r1.mm(b.cov).mm(r1);
  auto tr_sqrt = torch::linalg::eigvalsh((mid + mid.t()) / 2, "L").clamp_min(0).sqrt().sum();
  auto d = (a.mean - b.mean).pow(2).sum() + a.cov.trace() + b.cov.trace() - 2 * tr_sqrt;
  return std::max(0.0, d.item<double>());
}

}  // namespace tweedie
