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
  bool infinite = false;  // +inf accepted too ("inf" on the command line)
  bool words = false;     // not a number: a word, list or path kept as text
  std::string text_dflt;  // the default of a words option ("" = unset)

  // A words option: MethodOption::text("cfg-schedule", "constant", "help").
  static MethodOption text(std::string name, std::string dflt, std::string help) {
    MethodOption o{std::move(name), 0, std::move(help)};
    o.words = true;
    o.text_dflt = std::move(dflt);
    return o;
  }

  // Builders: MethodOption{"eta", 1, "noise fraction"}.in(0, 1, true, false)
  MethodOption& in(double a, double b, bool a_open = false, bool b_open = false) {
    lo = a, hi = b, lo_open = a_open, hi_open = b_open;
    return *this;
  }
  MethodOption& at_least(double a, bool open = false) { return in(a, INFINITY, open, false); }
  MethodOption& whole() { integer = true; return *this; }
  MethodOption& or_infinite() { infinite = true; return *this; }

  std::string range_text() const;  // "in (0, 1]", "> 0", ">= 1", "an integer >= 1", "" (any number)
  std::string default_text() const;  // for --help: the text default or the number ("inf" too)
  // Error "<who>: --NAME must be ... (got v)" for a value outside the range
  // (no "<who>: " when who is empty).
  void validate(double v, const std::string& who) const;
  // The number in text ("inf" where infinite), validated; Error naming the option otherwise.
  double parse(const std::string& text, const std::string& who) const;
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
  // Words options take the text; number options parse it.
  void set(const std::string& name, const std::string& text);
  bool declares(const std::string& name) const { return find(name) != nullptr; }
  bool given(const std::string& name) const { return set_.count(name) || texts_.count(name); }
  double number(const std::string& name) const;  // Error for an undeclared name (a programming error)
  int64_t integer(const std::string& name) const { return int64_t(std::llround(number(name))); }
  std::string text(const std::string& name) const;  // a words option's text or default
  const std::vector<MethodOption>& spec() const { return spec_; }

 private:
  const MethodOption* find(const std::string& name) const;
  std::vector<MethodOption> spec_;
  std::string who_;
  std::map<std::string, double> set_;
  std::map<std::string, std::string> texts_;
};

// Values by option name, for a method chosen later (RestoreOptions): given
// to values_for() with the method's declarations, which checks them.
class OptionValues {
 public:
  OptionValues& set(const std::string& name, double v);
  OptionValues& set(const std::string& name, int v) { return set(name, double(v)); }
  OptionValues& set(const std::string& name, const std::string& text);
  OptionValues& set(const std::string& name, const char* text) { return set(name, std::string(text)); }
  bool empty() const { return numbers_.empty() && texts_.empty(); }
  // The values checked against spec: Error "<who>: --x does not apply" or out of range.
  MethodValues values_for(const std::vector<MethodOption>& spec, const std::string& who) const;

 private:
  std::map<std::string, double> numbers_;
  std::map<std::string, std::string> texts_;
};

}  // namespace tweedie
