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

std::string MethodOption::default_text() const {
  if (words) return text_dflt;
  std::ostringstream o;
  o << dflt;
  return o.str();
}

void MethodOption::validate(double v, const std::string& who) const {
  const bool ok = (std::isfinite(v) || (infinite && v == INFINITY)) && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi) &&
                  (!integer || v == std::floor(v));
  if (ok) return;
  const std::string r = range_text();
  fail(who.empty() ? "" : who + ": ", "--", name, " must be ", r.empty() ? "a finite number" : r, " (got ", v, ")");
}

double MethodOption::parse(const std::string& text, const std::string& who) const {
  const std::string pre = who.empty() ? "" : who + ": ";
  check(!words, "internal: ", pre, "--", name, " is not a number");
  double v = 0;
  if (infinite && text == "inf") {
    v = INFINITY;
  } else {
    size_t pos = 0;
    try {
      v = std::stod(text, &pos);
    } catch (const std::exception&) {
      pos = 0;
    }
    check(pos > 0 && pos == text.size(), pre, "--", name, " expects a number, got '", text, "'");
  }
  validate(v, who);
  return v;
}

const MethodOption* MethodValues::find(const std::string& name) const {
  for (const auto& o : spec_)
    if (o.name == name) return &o;
  return nullptr;
}

void MethodValues::set(const std::string& name, double v) {
  const MethodOption* o = find(name);
  check(o != nullptr, who_, ": --", name, " does not apply");
  check(!o->words, who_, ": --", name, " takes a word, not the number ", v);
  o->validate(v, who_);
  set_[name] = v;
}

void MethodValues::set(const std::string& name, const std::string& text) {
  const MethodOption* o = find(name);
  check(o != nullptr, who_, ": --", name, " does not apply");
  if (!o->words) return set(name, o->parse(text, who_));
  texts_[name] = text;
}

std::string MethodValues::text(const std::string& name) const {
  const MethodOption* o = find(name);
  check(o != nullptr, "internal: ", who_, " has no option '", name, "'");
  auto it = texts_.find(name);
  return it == texts_.end() ? o->text_dflt : it->second;
}

OptionValues& OptionValues::set(const std::string& name, double v) {
  numbers_[name] = v;
  return *this;
}

OptionValues& OptionValues::set(const std::string& name, const std::string& text) {
  texts_[name] = text;
  return *this;
}

MethodValues OptionValues::values_for(const std::vector<MethodOption>& spec, const std::string& who) const {
  MethodValues v(spec, who);
  for (const auto& [name, x] : numbers_) v.set(name, x);
  for (const auto& [name, t] : texts_) v.set(name, t);
  return v;
}

double MethodValues::number(const std::string& name) const {
  const MethodOption* o = find(name);
  check(o != nullptr, "internal: ", who_, " has no option '", name, "'");
  auto it = set_.find(name);
  return it == set_.end() ? o->dflt : it->second;
}

}  // namespace tweedie
