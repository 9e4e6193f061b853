// Options a method declares where it is defined (edit methods today; the
// same shape serves guidance rules and restoration solvers): the name (the
// CLI flag without "--"), the default, one line of help and the accepted
// range. Commands build their flags and help from the registries, and every
// value is validated here, once, with one message shape:
//   "<who>: --mask-threshold must be in [0, 1) (got 1.5)".
// Verified in tests/test_registry.cpp (MethodOptions*).
#pragma once
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace tweedie {

struct MethodOption {
  std::string name;
  double dflt = 0;
  std::string help;
  double lo = -INFINITY, hi = INFINITY;
  bool lo_open = false, hi_open = false;  // (lo, ... and ..., hi)
  bool integer = false;

  // Builders: MethodOption{"eta", 1, "noise fraction"}.in(0, 1, true, false)
  MethodOption& in(double a, double b, bool a_open = false, bool b_open = false) {
    lo = a, hi = b, lo_open = a_open, hi_open = b_open;
    return *this;
  }
  MethodOption& at_least(double a, bool open = false) { return in(a, INFINITY, open, false); }
  MethodOption& whole() { integer = true; return *this; }

  std::string range_text() const;  // "in (0, 1]", "> 0", ">= 1", "an integer >= 1", "" (any number)
  // Error "<who>: --NAME must be ... (got v)" for a value outside the range.
  void validate(double v, const std::string& who) const;
};

// Values for one method's declared options: set ones validated, the rest
// their defaults.
class MethodValues {
 public:
  MethodValues() = default;
  MethodValues(std::vector<MethodOption> spec, std::string who) : spec_(std::move(spec)), who_(std::move(who)) {}

  // Error for an option the method does not declare ("<who>: --x does not
  // apply") or a value out of range.
  void set(const std::string& name, double v);
  bool declares(const std::string& name) const { return find(name) != nullptr; }
  double number(const std::string& name) const;  // Error for an undeclared name (a programming error)
  int64_t integer(const std::string& name) const { return int64_t(std::llround(number(name))); }
  const std::vector<MethodOption>& spec() const { return spec_; }

 private:
  const MethodOption* find(const std::string& name) const;
  std::vector<MethodOption> spec_;
  std::string who_;
  std::map<std::string, double> set_;
};

}  // namespace tweedie
