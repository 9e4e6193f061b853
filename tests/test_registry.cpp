// Registry<Info> (core/registry.h): lookup by name and alias, the error that
// lists the known names, sorted listing, clashes reported; and the four
// method registries it backs hold what their registrations declare.
#include <gtest/gtest.h>

#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/core/method_options.h"
#include "tweedie/core/registry.h"
#include "tweedie/edit/inversion.h"
#include "tweedie/process/schedule.h"
#include "tweedie/restore/solver.h"
#include "tweedie/sample/sampler.h"

using namespace tweedie;

namespace {

struct Plain {
  std::string name;
  int value = 0;
};
struct Aliased {
  std::string name;
  std::vector<std::string> aliases;
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Registry, FindsByNameListsSortedAndNamesTheKnownOnes) {
  Registry<Plain> r("widget");
  r.add({"zeta", 1});
  r.add({"alpha", 2});
  r.add({"mid", 3});
  ASSERT_EQ(r.all().size(), 3u);
  EXPECT_EQ(r.all()[0].name, "alpha");
  EXPECT_EQ(r.all()[2].name, "zeta");
  EXPECT_EQ(r.find("mid").value, 3);
  EXPECT_TRUE(r.contains("zeta"));
  EXPECT_FALSE(r.contains("beta"));
  EXPECT_EQ(error_of([&] { r.find("beta"); }), "unknown widget 'beta' (known: alpha, mid, zeta)");
}

TEST(Registry, AliasesFindTheirEntry) {
  Registry<Aliased> r("sampler");
  r.add({"euler-a", {"euler_a"}});
  r.add({"heun", {}});
  EXPECT_EQ(r.find("euler_a").name, "euler-a");
  EXPECT_EQ(r.names(), "euler-a, heun");  // aliases are not listed as names
}

TEST(Registry, ClashingNamesAreReportedOnUse) {
  Registry<Aliased> r("sampler");
  r.add({"euler", {"flow-euler"}});
  r.add({"flow-euler", {}});  // an alias of another entry
  EXPECT_EQ(error_of([&] { r.all(); }), "sampler registry: the name 'flow-euler' is registered twice");
}

TEST(Registry, AnEmptyNameIsReportedOnUse) {
  Registry<Aliased> r("sampler");
  r.add({"euler", {}});
  EXPECT_NO_THROW(r.all());
  r.add({"", {}});
  EXPECT_EQ(error_of([&] { r.all(); }), "sampler registry: an entry has an empty name");
  Registry<Aliased> a("sampler");
  a.add({"heun", {""}});  // an empty alias
  EXPECT_EQ(error_of([&] { a.find("heun"); }), "sampler registry: an entry has an empty name");
}

TEST(Registry, MethodRegistrationsDeclareWhatTheyAre) {
  // Builders set the fields by name: ode(k) = deterministic, invertible, order k;
  // sde() = stochastic, order 0; deterministic(k) = not invertible.
  const SamplerInfo& heun = find_sampler("heun");
  EXPECT_FALSE(heun.stochastic);
  EXPECT_TRUE(heun.invertible);
  EXPECT_EQ(heun.order, 2);
  EXPECT_EQ(find_sampler("flow-heun").name, "heun");
  const SamplerInfo& ea = find_sampler("euler_a");
  EXPECT_EQ(ea.name, "euler-a");
  EXPECT_TRUE(ea.stochastic);
  EXPECT_FALSE(ea.invertible);
  EXPECT_EQ(ea.order, 0);
  const SamplerInfo& cfgpp = find_sampler("euler-cfg++");
  EXPECT_FALSE(cfgpp.stochastic);
  EXPECT_FALSE(cfgpp.invertible);
  EXPECT_EQ(cfgpp.order, 1);
  for (const SamplerInfo& s : samplers()) {
    EXPECT_TRUE(s.fn) << s.name;
    EXPECT_EQ(s.stochastic, s.order == 0) << s.name;
    EXPECT_FALSE(s.stochastic && s.invertible) << s.name;
  }
  EXPECT_TRUE(find_inversion_method("edict").exact);
  EXPECT_FALSE(find_inversion_method("ddim").exact);
  const RestoreSolverInfo& ddrm = find_restore_solver("ddrm");
  EXPECT_TRUE(ddrm.needs_svd && ddrm.declares("eta-b") && !ddrm.time_travel() && !ddrm.baseline);
  const RestoreSolverInfo& psld = find_restore_solver("psld");
  EXPECT_TRUE(psld.declares("zeta") && psld.decoder && psld.needs_decoder);
  const RestoreSolverInfo& tik = find_restore_solver("tikhonov");
  EXPECT_TRUE(tik.needs_svd && tik.baseline);
  EXPECT_EQ(error_of([] { find_schedule("nope"); }).rfind("unknown schedule 'nope' (known: ", 0), 0u);
  EXPECT_EQ(error_of([] { find_restore_solver("nope"); }).rfind("unknown solver 'nope' (known: ", 0), 0u);
  EXPECT_EQ(error_of([] { find_inversion_method("nope"); }).rfind("unknown inversion method 'nope' (known: ", 0), 0u);
}

TEST(MethodOptions, RangesDefaultsAndMessages) {
  MethodValues v({MethodOption{"eta", 1.0, "noise"}.in(0, 1, true, false),
                  MethodOption{"samples", 10, "draws"}.whole().at_least(1),
                  MethodOption{"scale", 3.0, "any"}},
                 "cmd --method m");
  EXPECT_EQ(v.number("eta"), 1.0);
  EXPECT_EQ(v.integer("samples"), 10);
  v.set("eta", 0.25);
  v.set("samples", 4);
  v.set("scale", -7);
  EXPECT_EQ(v.number("eta"), 0.25);
  EXPECT_EQ(v.integer("samples"), 4);
  EXPECT_EQ(v.number("scale"), -7);
  EXPECT_EQ(error_of([&] { v.set("eta", 0); }), "cmd --method m: --eta must be in (0, 1] (got 0)");
  EXPECT_EQ(error_of([&] { v.set("samples", 2.5); }), "cmd --method m: --samples must be an integer >= 1 (got 2.5)");
  EXPECT_EQ(error_of([&] { v.set("samples", 0); }), "cmd --method m: --samples must be an integer >= 1 (got 0)");
  EXPECT_EQ(error_of([&] { v.set("scale", NAN); }), "cmd --method m: --scale must be a finite number (got nan)");
  EXPECT_EQ(error_of([&] { v.set("other", 1); }), "cmd --method m: --other does not apply");
  EXPECT_EQ((MethodOption{"x", 0, ""}.at_least(0, true).range_text()), "> 0");
  EXPECT_TRUE(v.declares("eta"));
  EXPECT_FALSE(v.declares("other"));
}
