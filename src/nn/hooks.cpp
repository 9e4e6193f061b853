// Hook registry (see hooks.h).
#include "tweedie/nn/hooks.h"

namespace tweedie {

void Hooks::add(const std::string& pattern, HookFn fn) { entries_.push_back({pattern, std::move(fn)}); }
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

}  // namespace tweedie
