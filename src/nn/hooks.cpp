// Hook registry and ScopedHook (see hooks.h). Verified in
// tests/test_guidance.cpp (Hooks suite): ids remove exactly their hook,
// ScopedHooks install and remove a Hooks object in any order, and leave a
// user's Hooks object in place with its own hooks.
#include "tweedie/nn/hooks.h"

#include <algorithm>

#include "tweedie/models/network.h"

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

ScopedHook::ScopedHook(Network& net, const std::string& pattern, HookFn fn) : net_(net), hooks_(net.hooks()) {
  if (!hooks_) {
    hooks_ = new Hooks();
    hooks_->scoped_ = true;
    net_.set_hooks(hooks_);
  }
  ++hooks_->users_;
  id_ = hooks_->add(pattern, std::move(fn));
}

ScopedHook::~ScopedHook() {
  hooks_->remove(id_);
  if (--hooks_->users_ == 0 && hooks_->scoped_) {
    if (net_.hooks() == hooks_) net_.set_hooks(nullptr);
    delete hooks_;
  }
}

}  // namespace tweedie
