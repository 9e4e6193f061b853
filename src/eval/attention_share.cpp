// Cross-attention mass inside a region (include/tweedie/eval/attention_share.h).
#include "tweedie/eval/attention_share.h"

#include <cmath>

#include "tweedie/core/error.h"

namespace tweedie {

namespace {
const std::string kSuffix = ".probs";
}

AttentionShare::AttentionShare(Network& net, int64_t latent_h, int64_t latent_w) : lh_(latent_h), lw_(latent_w) {
  check(lh_ >= 1 && lw_ >= 1, "attention share: latent size must be positive");
  hook_ = std::make_unique<ScopedHook>(net.hooks(), "*attn2.probs", [this](const std::string& site, const torch::Tensor& p,
                                                                   const HookContext& ctx) {
    return observe(site, p, ctx);
  });
}

AttentionShare::~AttentionShare() = default;

void AttentionShare::set_targets(std::vector<AttentionTarget> targets, int64_t samples) {
  check(samples >= 1, "attention share: samples must be >= 1");
  for (auto& t : targets) {
    check(t.row >= 0 && !t.tokens.empty(), "attention share: a target needs a row >= 0 and at least one token");
    check(t.box[0] >= 0 && t.box[1] >= 0 && t.box[2] <= 1 && t.box[3] <= 1 && t.box[0] < t.box[2] && t.box[1] < t.box[3],
          "attention share: box must be top < bottom, left < right within [0, 1]");
  }
  for (auto& t : targets) check(t.row < samples, "attention share: target row ", t.row, " of ", samples, " samples");
  targets_ = std::move(targets);
  samples_ = samples;
}

double AttentionShare::share_inside(const torch::Tensor& m, const std::array<double, 4>& box) {
  const int64_t h = m.size(0), w = m.size(1);
  auto a = m.to(torch::kFloat64).contiguous();
  auto acc = a.accessor<double, 2>();
  double in = 0, all = 0;
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      const double cy = (double(y) + 0.5) / double(h), cx = (double(x) + 0.5) / double(w);
      all += acc[y][x];
      if (cy >= box[0] && cy < box[2] && cx >= box[1] && cx < box[3]) in += acc[y][x];
    }
  return all > 0 ? in / all : 0;
}

torch::Tensor AttentionShare::observe(const std::string& site, const torch::Tensor& probs, const HookContext& ctx) {
  if (targets_.empty()) return probs;
  const int64_t Lq = probs.size(1), Lk = probs.size(2);
  // The layer's grid: the latent's, downsampled by a power of two.
  int64_t h = lh_, w = lw_;
  while (h * w > Lq && h % 2 == 0 && w % 2 == 0) h /= 2, w /= 2;
  check(h * w == Lq, "attention share: ", Lq, " queries at ", site, " are no downsampling of the ", lh_, "x", lw_,
        " latents");
  // Batch rows B and heads H: probs is [B*H, Lq, Lk] with row b*H + h.
  std::vector<int64_t> rows;
  int64_t B = samples_;
  if (ctx.branches.empty()) {
    for (int64_t r = 0; r < samples_; ++r) rows.push_back(r);
  } else {
    B = 0;
    for (auto& br : ctx.branches) B = std::max(B, br.end);
    rows = ctx.rows("cond");
  }
  check(probs.size(0) % B == 0, "attention share: ", probs.size(0), " attention rows for ", B, " samples");
  const int64_t H = probs.size(0) / B;
  auto p = probs.detach().to(torch::kFloat32).view({B, H, Lq, Lk});
  const std::string layer = site.substr(0, site.size() - kSuffix.size());
  for (auto& t : targets_) {
    if (t.row >= int64_t(rows.size())) continue;  // a call with fewer conditional rows (not this batch)
    for (int64_t tok : t.tokens) check(tok >= 0 && tok < Lk, "attention share: token ", tok, " outside the ", Lk, "-token context");
    auto idx = torch::tensor(t.tokens, torch::kInt64);
    auto m = p[rows[size_t(t.row)]].index_select(2, idx).sum(2).mean(0).view({h, w});
    Tally& tl = tallies_[layer][ctx.step];
    tl.sum += share_inside(m, t.box);
    ++tl.count;
  }
  return probs;
}

}  // namespace tweedie
