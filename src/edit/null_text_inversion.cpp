// Null-text inversion (Mokady, Hertz, Aberman, Pritch & Cohen-Or 2023,
// "Null-text Inversion for Editing Real Images using Guided Diffusion
// Models", CVPR). For text models the "null text" is the unconditional
// context (the negative prompt's encoding, [N, L, D] per step), as in the
// paper; for class-label models it is the learned null-class embedding.
//
// 1. Pivot: DDIM inversion at w = 1 under the source condition gives the
//    states x*_k at every level, ending at the data itself (inversion.cpp).
// 2. Decoding at scale w from x_0 = x*_0 goes off that path, because CFG
//    changes eps. So, step by step from the top, the null embedding e_k
//    (one per sample, starting from the previous step's) is optimized with
//    Adam so that the guided DDIM step lands on the pivot:
//      min_e |x*_{k+1} - DDIM(x_k, eps_w(x_k; c, e))|^2   (in the model's space)
//    for at most inner_steps iterations, stopping early once every sample's
//    loss is below 1e-5 + 2e-5 k, with learning rate lr (1 - k/100)
//    (the paper's schedule); then x_{k+1} = DDIM(x_k, eps_w(x_k; c, e_k)).
// 3. Decoding (reconstruction, or an edit under another class) is CFG at w
//    with e_k in place of the null embedding at step k. At w = 1 nothing is
//    optimized (the null branch is not evaluated) and this is DDIM inversion.
// Text models: the optimized context is CFG's negative branch (NullSlot).
// Class models: the embedding enters through the network's "label_emb" hook site (hooks.h):
// CFG (guide/cfg.cpp) evaluates the batch [cond; negative] in one call, and
// the hook replaces exactly the rows that hold the null class's embedding,
// i.e. the negative branch (the source must therefore be a real class). The
// level of the call (HookContext::s, set by NetDenoiser) selects e_k.
// Verified (tests/test_edit.cpp): at CFG 3 on the default model the
// reconstruction error is many times below plain DDIM inversion's at CFG 3.
#include <torch/autograd.h>

#include <algorithm>
#include <map>

#include "tweedie/core/error.h"
#include "tweedie/edit/inversion.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/models/net_denoiser.h"
#include "tweedie/train/adamw.h"

namespace tweedie {
namespace {

// While alive: the network's "label_emb" rows equal to the null embedding are
// replaced by embedding(s) [N, D] at the call's level s. Hooks that were
// added before keep running first.
class NullEmbeddingSwap {
 public:
  explicit NullEmbeddingSwap(const DenoiserPtr& model) : net_(checked(model)) {
    hook_ = std::make_unique<ScopedHook>(
        net_->network().hooks(), "label_emb",
        [this](const std::string&, const torch::Tensor& y, const HookContext& ctx) {
          if (capturing_) {  // null_embedding()'s call: its one row is the null class
            null_ = y[0].detach().clone();
            return y;
          }
          if (!embedding || !null_.defined()) return y;
          auto rows = (y == null_).all(1);
          const int64_t k = rows.sum().item<int64_t>();
          if (k == 0) return y;
          torch::Tensor e = embedding(ctx.s);
          check(e.size(0) == k, "null-text inversion: ", k, " null-class rows in a call for ", e.size(0), " samples");
          return y.index_put({rows}, e.to(y.dtype()));
        });
  }
  NullEmbeddingSwap(const NullEmbeddingSwap&) = delete;
  NullEmbeddingSwap& operator=(const NullEmbeddingSwap&) = delete;

  // The null class's embedding [D], from one network call on x's first sample.
  torch::Tensor null_embedding(const torch::Tensor& x, double s) {
    Cond c;
    c.labels = torch::full({1}, -1, torch::kInt64);
    torch::NoGradGuard ng;
    capturing_ = true;
    try {
      net_->predict(x.slice(0, 0, 1), s, c);
    } catch (...) {
      capturing_ = false;
      throw;
    }
    capturing_ = false;
    return null_;
  }

  std::function<torch::Tensor(double)> embedding;  // [N, D] at level s; empty: no swap

 private:
  static std::shared_ptr<NetDenoiser> checked(const DenoiserPtr& model) {
    auto net = std::dynamic_pointer_cast<NetDenoiser>(model);
    check(net != nullptr && net->network().num_classes() > 0,
          "null-text inversion needs a class-conditional network model (its null class is optimized)");
    return net;
  }
  std::shared_ptr<NetDenoiser> net_;
  std::unique_ptr<ScopedHook> hook_;
  torch::Tensor null_;
  bool capturing_ = false;
};

// The null condition being optimized, and CFG around it: a class model's
// null-class embedding (swapped in through the "label_emb" hook; CFG keeps
// its usual negative branch), or a text model's unconditional context (CFG's
// negative branch is the condition's null_like with that context).
class NullSlot {
 public:
  NullSlot(const DenoiserPtr& model, const Cond& c, double w)
      : text_(c.context.defined() && !c.labels.defined()), model_(model) {
    if (text_) {
      CFGOptions g;
      g.scale = w;
      g.negative = [this](const Cond& pos) {
        Cond n = pos.null_like();
        n.context = embedding(level_).to(pos.context.scalar_type());
        return n;
      };
      cfg_ = std::make_shared<CFGDenoiser>(model, g);
    } else {
      swap_ = std::make_unique<NullEmbeddingSwap>(model);
      cfg_ = std::make_shared<CFGDenoiser>(model, w);
    }
  }
  // The embedding to start from for N samples: the null class's, or the
  // condition's unconditional context (the negative prompt's).
  torch::Tensor initial(const torch::Tensor& x, double s, const Cond& c, int64_t N) {
    if (text_) return c.null_like().context.expand({N, -1, -1}).detach().clone();
    return swap_->null_embedding(x, s).expand({N, -1}).clone();
  }
  // CFG at w with embedding(s) as the null at level s.
  Prediction predict(const torch::Tensor& x, double s, const Cond& c) {
    level_ = s;
    return cfg_->predict(x, s, c);
  }
  void set(std::function<torch::Tensor(double)> f) {
    embedding = std::move(f);
    if (swap_) swap_->embedding = embedding;
  }
  // The guided denoiser for whole sampler runs (decoding).
  DenoiserPtr denoiser() {
    struct AtLevel : Denoiser {
      NullSlot* slot;
      explicit AtLevel(NullSlot* n) : slot(n) {}
      const Process& process() const override { return slot->model_->process(); }
      Prediction predict(const torch::Tensor& x, double s, const Cond& c) override { return slot->predict(x, s, c); }
    };
    return std::make_shared<AtLevel>(this);
  }

 private:
  bool text_;
  DenoiserPtr model_;
  std::unique_ptr<NullEmbeddingSwap> swap_;
  std::shared_ptr<CFGDenoiser> cfg_;
  std::function<torch::Tensor(double)> embedding;
  double level_ = 0;
};

// Per-sample mean squared error [N] in the model's space at level s.
torch::Tensor model_space_mse(const Process& p, const torch::Tensor& a, const torch::Tensor& b, double s) {
  return ((a - b) * p.model_scale(s)).pow(2).flatten(1).mean(1);
}

Inversion null_text_invert(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x,
                           const Cond& c, const InversionOptions& o) {
  check(o.inner_steps >= 1, "null-text inversion: inner steps must be >= 1 (got ", o.inner_steps, ")");
  check(o.lr > 0, "null-text inversion: the learning rate must be positive (got ", o.lr, ")");
  const bool text = c.context.defined() && !c.labels.defined();
  check(text || (c.labels.defined() && (c.labels >= 0).all().item<bool>()),
        "null-text inversion needs a real source class for every sample (not the null class), or a source prompt on "
        "text models");
  NullSlot slot(model, c, o.cfg);
  InversionOptions pivot_opt = o;
  pivot_opt.cfg = 1.0, pivot_opt.sampler = "ddim", pivot_opt.sampler_options = {}, pivot_opt.progress = {};
  Inversion pivot = find_inversion_method("ddim").invert(model, sigmas, x, c, pivot_opt);
  Inversion inv = edit_detail::start("null-text", sigmas, c, o);
  inv.latent = pivot.latent;
  inv.trajectory = pivot.trajectory;
  inv.nfe = pivot.nfe;
  const int n = inv.steps();
  if (n == 0) return inv;

  const int64_t N = x.size(0);
  torch::Tensor e = slot.initial(inv.latent.to(x.dtype()), inv.sigmas[0], c, N);
  if (!text) ++inv.nfe;  // the class embedding took one network call
  const Process& p = model->process();
  torch::Tensor current;
  slot.set([&](double) { return current; });
  torch::Tensor xk = inv.latent;
  for (int k = 0; k < n; ++k) {
    const double s = inv.sigmas[k], s_lo = inv.sigmas[k + 1];
    const torch::Tensor& target = inv.trajectory[k + 1];
    const double threshold = 1e-5 + 2e-5 * k, lr = o.lr * std::max(0.1, 1.0 - k / 100.0);
    torch::Tensor param = e.clone().requires_grad_(true);
    AdamW adam({{"null", param}}, AdamW::Options{o.lr, 0.9, 0.999, 1e-8, 0.0});
    current = param;
    torch::Tensor next;
    {
      torch::AutoGradMode grad_on(true);
      for (int it = 0; it < (o.cfg == 1.0 ? 0 : o.inner_steps); ++it) {  // w = 1: the null branch is unused
        auto xn = ddim_step(p, slot.predict(xk, s, c), s_lo);
        ++inv.nfe;
        auto loss = model_space_mse(p, xn, target, s_lo);
        if (loss.max().item<double>() < threshold) {
          next = xn.detach();
          break;
        }
        auto g = torch::autograd::grad({loss.sum()}, {param}, {}, false, false, true)[0];
        if (!g.defined()) {  // the null branch was not evaluated (w(s) = 1)
          next = xn.detach();
          break;
        }
        param.mutable_grad() = g;
        adam.step(lr);
      }
    }
    e = param.detach().clone();
    current = e;
    if (!next.defined()) {
      torch::NoGradGuard ng;
      next = ddim_step(p, slot.predict(xk, s, c), s_lo);
      ++inv.nfe;
    }
    inv.null_embeddings.push_back(e);
    xk = next;
    if (o.progress) o.progress(k + 1, n);
  }
  return inv;
}

torch::Tensor null_text_decode(const DenoiserPtr& model, const Inversion& inv, const Cond& c,
                               const InversionOptions& o) {
  check(int(inv.null_embeddings.size()) == inv.steps(), "null-text inversion: ", inv.null_embeddings.size(),
        " null embeddings for ", inv.steps(), " steps");
  std::map<double, torch::Tensor> at;
  for (int k = 0; k < inv.steps(); ++k) at[inv.sigmas[k]] = inv.null_embeddings[k];
  NullSlot slot(model, inv.source, o.cfg);
  slot.initial(inv.latent.to(torch::kFloat32), inv.sigmas[0], inv.source, inv.latent.size(0));  // captures the null class
  slot.set([&](double s) {
    auto it = at.find(s);
    check(it != at.end(), "null-text inversion: no optimized null embedding for noise level ", s,
          " (decode on the levels of the inversion)");
    return it->second;
  });
  return edit_detail::sample_down(*slot.denoiser(), inv, c, o, "ddim");
}

InversionMethodRegistrar reg(InversionMethodInfo{"null-text",
                              "null-text inversion: per-step null-class embeddings optimized (Adam, --inner-steps, --lr) "
                              "so that CFG at w follows the w = 1 DDIM path",
                              "Mokady et al. 2023, Null-text Inversion", null_text_invert, null_text_decode});

}  // namespace
}  // namespace tweedie
