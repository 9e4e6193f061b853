// Cond helpers.
#include "tweedie/models/denoiser.h"

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
  for (auto& [k, v] : extra)
    if (k == "null_context") c.extra[k] = v;
  return c;
}

}  // namespace tweedie
