// Hooks: named sites inside networks where code can observe or replace
// values, with the step context. Prompt-to-Prompt, MasaCtrl, PAG, SAG, ToMe,
// DeepCache, FreeU, ControlNet residuals and feature extraction are hooks,
// not copies of a model (DESIGN.md).
//
// Site names are the module path of the site plus what it carries, e.g.
//   "down.1.attn.0.probs"   attention probabilities [B*heads, Lq, Lk]
//   "down.1.attn.0.q" / ".k" / ".v"   projected queries/keys/values [B, heads, L, d]
//   "down.1.attn.0.out"     attention output before the residual add
//   "down.1.res.0.out"      a residual block's output
//   "skip.3"                a UNet skip connection
//   "label_emb"             the class embedding (before it joins temb)
//   "temb"                  the time (+class) embedding
//   "blocks.4.out"          a transformer block's output
// A hook returns the value to use (the input itself to only observe).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

namespace tweedie {

struct HookContext {
  int step = -1;           // sampler step, -1 outside sampling
  double s = 0;            // noise level of the current evaluation
  std::string branch;      // "cond", "uncond", "source", "target", "perturbed", ... ("" if none)
};

using HookFn = std::function<torch::Tensor(const std::string& site, const torch::Tensor& value, const HookContext& ctx)>;

class Hooks {
 public:
  // pattern: an exact site name, a prefix ending in '*' ("down.*"), or a
  // suffix starting with '*' ("*.probs"); "*" matches every site.
  void add(const std::string& pattern, HookFn fn);
  void clear();
  bool empty() const { return entries_.empty(); }
  // Apply every matching hook in the order added.
  torch::Tensor apply(const std::string& site, torch::Tensor value) const;
  // True if any hook matches the site (lets a module skip work, e.g. keeping probabilities).
  bool wants(const std::string& site) const;

  HookContext ctx;

 private:
  struct Entry {
    std::string pattern;
    HookFn fn;
  };
  static bool match(const std::string& pattern, const std::string& site);
  std::vector<Entry> entries_;
};

}  // namespace tweedie
