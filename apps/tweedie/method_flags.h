// Flags for the options methods declare in their registrations (edit
// methods, restoration solvers): one flag per option name, shared by the
// methods that declare it, its help prefixed by them ("ddnm, ddrm: ...") and
// its default the methods' own ("ddnm 0.85, dps 1" where they differ).
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "cli.h"
#include "tweedie/core/method_options.h"

namespace tweedie::cli {

// (method name, its declared options) for each method, in listing order.
using DeclaredOptions = std::vector<std::pair<std::string, const std::vector<MethodOption>*>>;

std::vector<Args::Opt> declared_option_flags(const DeclaredOptions& methods);

// The declared options given on the command line, as text by name; an
// option the chosen method does not declare is an Error "<who>: --x applies
// to a, b only, not <chosen>".
OptionValues given_option_values(const Args& a, const DeclaredOptions& methods, const std::string& chosen,
                                 const std::string& who);

}  // namespace tweedie::cli
