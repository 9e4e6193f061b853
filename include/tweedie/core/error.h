// Errors are values the user can read: one line naming the file, key, option or
// value at fault. Library code throws tweedie::Error; the CLI prints what() and
// exits non-zero.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace tweedie {

struct Error : std::runtime_error {
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
inline void cat(std::ostringstream&) {}
template <class T, class... R>
void cat(std::ostringstream& o, const T& v, const R&... r) {
  o << v;
  cat(o, r...);
}
}  // namespace detail

// fail("unknown sampler '", name, "'") -> throws Error with the pieces joined.
template <class... A>
[[noreturn]] void fail(const A&... a) {
  std::ostringstream o;
  detail::cat(o, a...);
  throw Error(o.str());
}

template <class... A>
void check(bool ok, const A&... a) {
  if (!ok) fail(a...);
}

}  // namespace tweedie
