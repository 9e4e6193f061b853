// Cond helpers.
#include "tweedie/models/denoiser.h"

#include "tweedie/core/error.h"

namespace tweedie {

Cond Cond::null_like() const {
  Cond c;
  if (labels.defined()) c.labels = torch::full_like(labels, -1);
  auto it = extra.find("null_context");
  if (it != extra.end()) {
    c.context = context.defined() ? it->second.expand_as(context) : it->second;
  } else if (context.defined()) {
    c.context = torch::zeros_like(context);
  }
  for (auto& [k, v] : extra) {
    if (k.compare(0, 5, "null_") != 0) continue;
    c.extra[k] = v;  // kept, so the null condition's null is itself
    if (k == "null_context") continue;
    const std::string key = k.substr(5);  // null_y -> y: the unconditional value of another entry
    auto own = extra.find(key);
    c.extra[key] = own != extra.end() && own->second.dim() == v.dim() ? v.expand_as(own->second) : v;
  }
  return c;
}

namespace {
torch::Tensor cat_defined(const torch::Tensor& a, const torch::Tensor& b, const char* what) {
  check(a.defined() == b.defined(), "Cond::concat: '", what, "' is set in one condition only");
  return a.defined() ? torch::cat({a, b}) : a;
}
}  // namespace

Cond Cond::concat(const Cond& other) const {
  Cond c;
  c.labels = cat_defined(labels, other.labels, "labels");
  c.context = cat_defined(context, other.context, "context");
  check(extra.size() == other.extra.size(), "Cond::concat: the conditions have different extra entries");
  for (auto& [k, v] : extra) {
    auto it = other.extra.find(k);
    check(it != other.extra.end(), "Cond::concat: extra '", k, "' is set in one condition only");
    c.extra[k] = v.is_same(it->second) ? v : torch::cat({v, it->second});
  }
  return c;
}

}  // namespace tweedie
