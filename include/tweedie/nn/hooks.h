// Hooks: named sites inside networks where code can observe or replace
// values, with the step context. Prompt-to-Prompt, MasaCtrl, PAG, SAG, ToMe,
// DeepCache, FreeU, ControlNet residuals and feature extraction are hooks,
// not copies of a model (docs/design.md).
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
// A hook returns the value to use (the input itself to only observe). It
// sees the call's context: the noise level, the sampler step in progress,
// and which rows of the batch are which branch (HookContext below).
//
// Each network owns its Hooks (Network::hooks()), shared by every user:
// add() returns an id that remove() takes back, and ScopedHook adds one hook
// for its own lifetime, so guidance rules (CADS, PAG, SAG) and user hooks
// coexist and leave the network as they found it. Verified in tests/test_guidance.cpp (Hooks suite:
// ids and scopes; branch paths of nested scopes; the step and branch rows a
// hook sees along a CFG + PAG run with several samplers).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

namespace tweedie {

// Rows [begin, end) of a batched network call that belong to one branch.
// The name is the path of the branches the rules nesting the call gave
// them, outermost first, joined by '/': "cond", "uncond", "source/cond",
// "uncond/perturbed", ...
struct HookBranch {
  std::string name;
  int64_t begin = 0, end = 0;
};

struct HookContext {
  int step = -1;                    // sampler step in progress (0-based), -1 outside sampling
  int steps = 0;                    // the run's number of steps, 0 outside sampling
  double s = 0;                     // noise level of the current evaluation
  std::vector<HookBranch> branches;  // rows by branch; empty when no rule batched this call

  // Rows whose branch path has `component` ("cond" selects "cond" and
  // "source/cond", not "uncond"), in order; empty if none.
  std::vector<int64_t> rows(const std::string& component) const;
  // The branch path of a row ("" when the call has no branches).
  std::string branch_of(int64_t row) const;
};

// A rule that evaluates its input batch as equal copies, one per branch
// (CFG: {"cond", "uncond"}; PAG: {"cond", "uncond", "perturbed"}; an edit's
// {"source", "target"}), declares them for the network calls it makes while
// this object lives. Scopes nest (thread-local), so composed rules give
// paths; a call whose batch does not divide into the declared copies gets no
// branches.
class BranchScope {
 public:
  explicit BranchScope(std::vector<std::string> names);
  ~BranchScope();
  BranchScope(const BranchScope&) = delete;
  BranchScope& operator=(const BranchScope&) = delete;
};

// The sampler step (of `steps`) of the network calls made while this lives
// (SamplerRun sets it; thread-local, nests).
class StepScope {
 public:
  explicit StepScope(int step, int steps = 0);
  ~StepScope();
  StepScope(const StepScope&) = delete;
  StepScope& operator=(const StepScope&) = delete;

 private:
  int previous_, previous_steps_;
};

// The context of a network call of `rows` rows at level s, from the scopes
// alive on this thread (NetDenoiser fills its network's Hooks::ctx with it).
HookContext current_hook_context(double s, int64_t rows);

using HookFn = std::function<torch::Tensor(const std::string& site, const torch::Tensor& value, const HookContext& ctx)>;

using HookId = uint64_t;

class Hooks {
 public:
  // pattern: an exact site name, a prefix ending in '*' ("down.*"), or a
  // suffix starting with '*' ("*.probs"); "*" matches every site. Returns
  // the id of this hook for remove().
  HookId add(const std::string& pattern, HookFn fn);
  // Remove the hook with this id (no-op if it is gone).
  void remove(HookId id);
  void clear();
  size_t size() const { return entries_.size(); }
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
    HookId id;
  };
  static bool match(const std::string& pattern, const std::string& site);
  std::vector<Entry> entries_;
  HookId next_id_ = 1;
};

// One hook for the lifetime of this object: added to `hooks` (a network's,
// Network::hooks()) and removed on destruction, in any order.
class ScopedHook {
 public:
  ScopedHook(Hooks& hooks, const std::string& pattern, HookFn fn);
  ~ScopedHook();
  ScopedHook(const ScopedHook&) = delete;
  ScopedHook& operator=(const ScopedHook&) = delete;
  Hooks& hooks() { return hooks_; }

 private:
  Hooks& hooks_;
  HookId id_;
};

}  // namespace tweedie
