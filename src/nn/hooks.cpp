// Hook registry and ScopedHook (see hooks.h). Verified in
// tests/test_guidance.cpp (Hooks suite): ids remove exactly their hook,
// ScopedHooks add and remove theirs in any order and leave the other hooks
// of the network in place.
#include "tweedie/nn/hooks.h"

#include <algorithm>

namespace tweedie {

HookId Hooks::add(const std::string& pattern, HookFn fn) {
  entries_.push_back({pattern, std::move(fn), next_id_});
  return next_id_++;
}

void Hooks::remove(HookId id) {
  entries_.erase(std::remove_if(entries_.begin(), entries_.end(), [id](const Entry& e) { return e.id == id; }),
                 entries_.end());
}

void Hooks::clear() { entries_.clear(); }

bool Hooks::match(const std::string& p, const std::string& site) {
  if (p == "*" || p == site) return true;
  if (p.size() > 1 && p.back() == '*') return site.compare(0, p.size() - 1, p, 0, p.size() - 1) == 0;
  if (p.size() > 1 && p.front() == '*')
    return site.size() >= p.size() - 1 && site.compare(site.size() - (p.size() - 1), p.size() - 1, p, 1) == 0;
  return false;
}

bool Hooks::wants(const std::string& site) const {
  for (auto& e : entries_)
    if (match(e.pattern, site)) return true;
  return false;
}

torch::Tensor Hooks::apply(const std::string& site, torch::Tensor value) const {
  for (auto& e : entries_)
    if (match(e.pattern, site)) value = e.fn(site, value, ctx);
  return value;
}

ScopedHook::ScopedHook(Hooks& hooks, const std::string& pattern, HookFn fn)
    : hooks_(hooks), id_(hooks.add(pattern, std::move(fn))) {}

ScopedHook::~ScopedHook() { hooks_.remove(id_); }

// ---------------------------------------------------------------- context

namespace {
thread_local std::vector<std::vector<std::string>> t_branches;  // outermost first
thread_local int t_step = -1;
thread_local int t_steps = 0;
}  // namespace

BranchScope::BranchScope(std::vector<std::string> names) { t_branches.push_back(std::move(names)); }
BranchScope::~BranchScope() { t_branches.pop_back(); }

StepScope::StepScope(int step, int steps) : previous_(t_step), previous_steps_(t_steps) {
  t_step = step;
  t_steps = steps;
}
StepScope::~StepScope() {
  t_step = previous_;
  t_steps = previous_steps_;
}

HookContext current_hook_context(double s, int64_t rows) {
  HookContext ctx;
  ctx.step = t_step;
  ctx.steps = t_steps;
  ctx.s = s;
  if (t_branches.empty() || rows <= 0) return ctx;
  // Row sizes of each level's copies, innermost first: the innermost rule's
  // copies split the call, each holding the batch the next rule out gave it.
  std::vector<int64_t> size(t_branches.size());
  int64_t b = rows;
  for (size_t k = t_branches.size(); k-- > 0;) {
    const int64_t n = int64_t(t_branches[k].size());
    if (n < 1 || b % n) return ctx;  // not the declared copies
    b /= n;
    size[k] = b;
  }
  for (int64_t r = 0; r < rows; ++r) {
    std::string path;
    for (size_t k = 0; k < t_branches.size(); ++k) {
      const auto& names = t_branches[k];
      path += (k ? "/" : "") + names[size_t((r / size[k]) % int64_t(names.size()))];
    }
    if (!ctx.branches.empty() && ctx.branches.back().name == path && ctx.branches.back().end == r)
      ctx.branches.back().end = r + 1;
    else
      ctx.branches.push_back({path, r, r + 1});
  }
  return ctx;
}

std::vector<int64_t> HookContext::rows(const std::string& component) const {
  std::vector<int64_t> out;
  for (const auto& b : branches) {
    size_t start = 0;
    bool has = false;
    while (start <= b.name.size()) {
      const size_t slash = b.name.find('/', start);
      const size_t end = slash == std::string::npos ? b.name.size() : slash;
      if (b.name.compare(start, end - start, component) == 0 && end - start == component.size()) has = true;
      start = end + 1;
    }
    if (has)
      for (int64_t r = b.begin; r < b.end; ++r) out.push_back(r);
  }
  return out;
}

std::string HookContext::branch_of(int64_t row) const {
  for (const auto& b : branches)
    if (row >= b.begin && row < b.end) return b.name;
  return "";
}

}  // namespace tweedie
