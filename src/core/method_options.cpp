// Declared method options and their values (core/method_options.h).
#include "tweedie/core/method_options.h"

#include <sstream>

#include "tweedie/core/error.h"

namespace tweedie {

std::string MethodOption::range_text() const {
  std::ostringstream o;
  const bool has_lo = std::isfinite(lo), has_hi = std::isfinite(hi);
  if (integer) o << "an integer" << (has_lo || has_hi ? " " : "");
  if (has_lo && has_hi)
    o << "in " << (lo_open ? "(" : "[") << lo << ", " << hi << (hi_open ? ")" : "]");
  else if (has_lo)
    o << (lo_open ? "> " : ">= ") << lo;
  else if (has_hi)
    o << (hi_open ? "< " : "<= ") << hi;
  return o.str();
}

void MethodOption::validate(double v, const std::string& who) const {
  const bool ok = std::isfinite(v) && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi) &&
                  (!integer || v == std::floor(v));
  if (ok) return;
  const std::string r = range_text();
  fail(who, ": --", name, " must be ", r.empty() ? "a finite number" : r, " (got ", v, ")");
}

const MethodOption* MethodValues::find(const std::string& name) const {
  for (const auto& o : spec_)
    if (o.name == name) return &o;
  return nullptr;
}

void MethodValues::set(const std::string& name, double v) {
  const MethodOption* o = find(name);
  check(o != nullptr, who_, ": --", name, " does not apply");
  o->validate(v, who_);
  set_[name] = v;
}

double MethodValues::number(const std::string& name) const {
  const MethodOption* o = find(name);
  check(o != nullptr, "internal: ", who_, " has no option '", name, "'");
  auto it = set_.find(name);
  return it == set_.end() ? o->dflt : it->second;
}

}  // namespace tweedie
