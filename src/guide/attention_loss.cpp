// Attention-loss guidance machinery (attention_loss.h).
#include "tweedie/guide/attention_loss.h"

#include <algorithm>
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/edit/paired_sampling.h"
#include "tweedie/nn/hooks.h"

namespace tweedie {

std::vector<CrossAttentionLayer> cross_attention_maps(NetDenoiser& net, const torch::Tensor& x, double s,
                                                      const Cond& c) {
  const int64_t n = x.size(0), lh = x.dim() == 4 ? x.size(2) : 0, lw = x.dim() == 4 ? x.size(3) : 0;
  check(lh > 0, "attention guidance needs image-shaped latents [N, C, H, W], got ", x.sizes());
  std::vector<CrossAttentionLayer> out;
  {
    ScopedHook keep(net.network().hooks(), "*attn2.probs",
                    [&](const std::string& site, const torch::Tensor& p, const HookContext&) {
                      const int64_t heads = p.size(0) / n, L = p.size(1);
                      const auto [h, w] = attention_grid(L, lh, lw);
                      check(h * w == L, "attention guidance: ", L, " queries at ", site, " do not tile the ", lh, "x",
                            lw, " latent");
                      out.push_back({site.substr(0, site.size() - 6), h, w,
                                     p.view({n, heads, L, p.size(2)}).mean(1).to(torch::kFloat64)});
                      return p;
                    });
    net.predict(x, s, c);
  }
  check(!out.empty(), "attention guidance: the ", net.network().arch(), " network has no cross-attention");
  return out;
}

torch::Tensor quarter_side_maps(const std::vector<CrossAttentionLayer>& maps, int64_t lh, int64_t& h, int64_t& w) {
  check(!maps.empty(), "no cross-attention maps");
  std::vector<int64_t> heights;
  for (const auto& m : maps) heights.push_back(m.h);
  h = quarter_side_height(heights, lh);
  torch::Tensor A;
  int64_t count = 0;
  for (const auto& m : maps)
    if (m.h == h) {
      A = A.defined() ? A + m.probs : m.probs;
      ++count, w = m.w;
    }
  return A / double(count);
}

torch::Tensor smooth_attention(const torch::Tensor& maps) {
  if (maps.size(2) < 2 || maps.size(3) < 2) return maps;
  const double e = std::exp(-1.0);
  auto k1 = torch::tensor({e, 1.0, e}, maps.options()) / (1 + 2 * e);
  auto kernel = (k1.view({3, 1}) * k1.view({1, 3})).view({1, 1, 3, 3});
  return torch::conv2d(torch::reflection_pad2d(maps, {1, 1, 1, 1}), kernel);
}

LossAndGradient attention_loss_gradient(NetDenoiser& net, const torch::Tensor& x, double s, const Cond& c,
                                        const AttentionLoss& loss) {
  torch::AutoGradMode grad_on(true);
  auto xg = x.detach().to(torch::kFloat32).requires_grad_(true);
  torch::Tensor l = loss(cross_attention_maps(net, xg, s, c));
  check(l.dim() == 1 && l.size(0) == x.size(0), "attention guidance: the loss must give one value per sample, got ",
        l.sizes());
  torch::Tensor g = l.requires_grad() ? torch::autograd::grad({l.sum()}, {xg}, {}, false, false, true)[0]
                                      : torch::Tensor();
  if (!g.defined()) g = torch::zeros_like(xg);
  return {l.detach(), g.detach().to(x.scalar_type())};
}

std::vector<std::vector<int64_t>> word_tokens(const std::vector<PromptWord>& words,
                                              const std::vector<std::string>& names, const std::string& option) {
  std::vector<std::vector<int64_t>> out;
  for (const std::string& name : names) {
    check(!name.empty() && name.find(',') == std::string::npos, "--", option, ": '", name, "' is not one word");
    out.push_back(prompt_word_tokens(words, name));
    if (out.back().empty()) {
      std::string all;
      for (const PromptWord& w : words) all += (all.empty() ? "" : ", ") + w.text;
      fail("--", option, ": '", name, "' is not a word of the prompt (", all, ")");
    }
  }
  return out;
}

StateUpdate chain(const StateUpdate& a, const StateUpdate& b) {
  if (!a.fn) return b;
  if (!b.fn) return a;
  StateUpdate out;
  out.steps = std::max(a.steps, b.steps);
  out.fn = [a, b](int step, int steps, double s, const torch::Tensor& x, const Cond& c) {
    torch::Tensor y = step < a.steps ? a.fn(step, steps, s, x, c) : x;
    return step < b.steps ? b.fn(step, steps, s, y, c) : y;
  };
  return out;
}

}  // namespace tweedie
