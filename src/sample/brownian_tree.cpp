// Brownian tree (see brownian_tree.h). Verified in
// tests/test_exponential_integrators.cpp: increments over disjoint intervals
// have variance |ds| and are uncorrelated, and W(s) is the same whether the
// levels are visited in a coarse or a fine sequence.
#include "brownian_tree.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "tweedie/sample/sampler.h"

#include "../core/splitmix.h"

namespace tweedie {
namespace {

uint64_t splitmix64(uint64_t z) { return detail::splitmix64_of(z); }

double positive_min(const std::vector<double>& s) {
  double m = std::numeric_limits<double>::infinity();
  for (double v : s)
    if (v > 0) m = std::min(m, v);
  return m;
}

}  // namespace

BrownianTree::BrownianTree(const torch::Tensor& like, double s_lo, double s_hi, uint64_t seed)
    : shape_(like.sizes().vec()), opt_(like.options()), lo_(s_lo), hi_(std::max(s_lo, s_hi)), seed_(seed) {
  w_hi_ = draw(0) * std::sqrt(hi_ - lo_);
}

BrownianTree::BrownianTree(SamplerRun& r, const torch::Tensor& like)
    : BrownianTree(like, positive_min(r.sigmas), *std::max_element(r.sigmas.begin(), r.sigmas.end()),
                   static_cast<uint64_t>(at::randint(std::numeric_limits<int64_t>::max(), {1}, r.gen,
                                                     torch::TensorOptions(torch::kLong).device(r.gen.device()))
                                             .item<int64_t>())) {}

torch::Tensor BrownianTree::draw(uint64_t k) const {
  auto g = at::make_generator<at::CPUGeneratorImpl>(splitmix64(seed_ ^ splitmix64(k)));
  return at::randn(shape_, g, torch::kFloat64);
}

torch::Tensor BrownianTree::W(double s) {
  s = std::clamp(s, lo_, hi_);
  auto it = cache_.find(s);
  if (it != cache_.end()) return it->second;
  // Bisect [l, h] (heap index k) towards s, drawing each midpoint from the bridge.
  double l = lo_, h = hi_;
  torch::Tensor wl = torch::zeros(shape_, torch::kFloat64), wh = w_hi_;
  const double tol = 1e-10 * (hi_ - lo_);
  for (uint64_t k = 1; s != l && s != h && h - l > tol;) {
    const double m = 0.5 * (l + h);
    auto wm = (wl + wh) * 0.5 + draw(k) * std::sqrt((h - l) / 4);
    if (s < m) {
      h = m, wh = wm, k = 2 * k;
    } else {
      l = m, wl = wm, k = 2 * k + 1;
    }
  }
  return cache_[s] = s == h ? wh : wl + (wh - wl) * ((s - l) / (h - l));
}

torch::Tensor BrownianTree::noise(double s, double s_next) {
  const double ds = std::abs(s_next - s);
  if (ds == 0) return torch::zeros(shape_, opt_);
  return ((W(s_next) - W(s)) / std::sqrt(ds)).to(opt_);
}

}  // namespace tweedie
