// Registry<Info>: the one table behind every "choose a method by name" list
// (samplers, schedules, inversion methods, restoration solvers). A method
// registers itself from its own file at static initialization:
//
//   SamplerRegistrar reg(SamplerInfo{"heun", "one line", "paper", heun}.ode(2));
//
// and callers list (`all()`, sorted by name) or look up (`find(name)`, by
// name or alias, with an Error listing the known names). Each kind declares
// `template <> Registry<KindInfo>& registry<KindInfo>()` in its header and
// defines it in its .cpp (one function-local static, so registration order
// across files does not matter and the table lives in libtweedie only).
// Info needs `std::string name`; an `aliases` vector is honoured when present.
// Verified in tests/test_registry.cpp.
#pragma once
#include <algorithm>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tweedie/core/error.h"

namespace tweedie {

namespace detail {
template <class T, class = void>
struct HasAliases : std::false_type {};
template <class T>
struct HasAliases<T, std::void_t<decltype(std::declval<const T&>().aliases)>> : std::true_type {};
}  // namespace detail

template <class Info>
class Registry {
 public:
  // `kind` names the entries in errors: "unknown sampler 'x' (known: ...)".
  explicit Registry(std::string kind) : kind_(std::move(kind)) {}

  // Registration is a programming step, not input: a second entry with a
  // taken name or alias is reported on the first lookup (throwing during
  // static initialization would terminate before main).
  void add(Info info) {
    for (const std::string& n : names_of(info))
      if (n.empty() || lookup(n)) clash_ = true, clash_name_ = n;
    entries_.push_back(std::move(info));
    sorted_ = false;
  }

  const std::vector<Info>& all() const {
    check(!clash_, kind_, " registry: ", clash_name_.empty() ? std::string("an entry has an empty name")
                                                      : "the name '" + clash_name_ + "' is registered twice");
    if (!sorted_) {
      std::sort(entries_.begin(), entries_.end(), [](const Info& a, const Info& b) { return a.name < b.name; });
      sorted_ = true;
    }
    return entries_;
  }

  // By name or alias; Error "unknown <kind> '<name>' (known: a, b, ...)".
  const Info& find(const std::string& name) const {
    all();
    if (const Info* i = lookup(name)) return *i;
    fail("unknown ", kind_, " '", name, "' (known: ", names(), ")");
  }

  bool contains(const std::string& name) const { return lookup(name) != nullptr; }

  std::string names(const std::string& sep = ", ") const {
    std::string out;
    for (const Info& i : all()) out += (out.empty() ? "" : sep) + i.name;
    return out;
  }

 private:
  static std::vector<std::string> names_of(const Info& i) {
    std::vector<std::string> n{i.name};
    if constexpr (detail::HasAliases<Info>::value) n.insert(n.end(), i.aliases.begin(), i.aliases.end());
    return n;
  }

  const Info* lookup(const std::string& name) const {
    for (const Info& i : entries_)
      for (const std::string& n : names_of(i))
        if (n == name) return &i;
    return nullptr;
  }

  std::string kind_;
  mutable std::vector<Info> entries_;
  mutable bool sorted_ = true;
  bool clash_ = false;
  std::string clash_name_;
};

// The registry of one kind; each kind specializes it in its own .cpp.
template <class Info>
Registry<Info>& registry();

// `static Registrar<Info> reg(info);` in a method's file adds it.
template <class Info>
struct Registrar {
  explicit Registrar(Info info) { registry<Info>().add(std::move(info)); }
};

}  // namespace tweedie
