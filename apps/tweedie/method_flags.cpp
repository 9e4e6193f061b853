#include "method_flags.h"

#include <algorithm>
#include <map>

#include "tweedie/core/error.h"

namespace tweedie::cli {

std::vector<Args::Opt> declared_option_flags(const DeclaredOptions& methods) {
  std::vector<Args::Opt> out;
  for (const auto& [method, options] : methods)
    for (const MethodOption& o : *options) {
      if (std::any_of(out.begin(), out.end(), [&](const Args::Opt& f) { return f.name == o.name; })) continue;
      std::string who, dflts;
      bool same = true;
      std::map<std::string, int> helps;  // the most common help text describes the flag
      for (const auto& [m, os] : methods)
        for (const MethodOption& x : *os)
          if (x.name == o.name) {
            who += (who.empty() ? "" : ", ") + m;
            // a default outside the range: the method decides (e.g. its sampler's own)
            const bool own = !x.words && !(x.dflt >= x.lo && x.dflt <= x.hi);
            dflts += (dflts.empty() ? "" : ", ") + m + " " + (own ? std::string("its own") : x.default_text());
            same = same && x.default_text() == o.default_text();
            ++helps[x.help];
          }
      std::string help = o.help;
      for (const auto& [h, k] : helps)
        if (k > helps[help]) help = h;
      const std::string range = o.range_text();
      out.push_back({o.name, "", false, who + ": " + help + (range.empty() ? "" : " (" + range + ")"),
                     same ? o.default_text() : dflts});
    }
  return out;
}

OptionValues given_option_values(const Args& a, const DeclaredOptions& methods, const std::string& chosen,
                                 const std::string& who) {
  OptionValues v;
  for (const Args::Opt& f : declared_option_flags(methods)) {
    if (!a.has(f.name)) continue;
    std::string takers;
    bool ok = false;
    for (const auto& [m, os] : methods)
      for (const MethodOption& x : *os)
        if (x.name == f.name) {
          takers += (takers.empty() ? "" : ", ") + m;
          ok = ok || m == chosen;
        }
    check(ok, who.empty() ? "" : who + ": ", "--", f.name, " applies to ", takers, " only, not ", chosen);
    v.set(f.name, a.str(f.name));
  }
  return v;
}

}  // namespace tweedie::cli
