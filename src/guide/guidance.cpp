// The guidance registry, option values and make_guidance: the rules that are
// on, composed around a base Denoiser in their registered order (guidance.h).
// Verified in tests/test_guidance.cpp: neutral options return the base
// itself, the composed x0 equals the rules applied by hand in that order on
// the Gaussian mixture, PAG + SAG + AutoGuidance + CFG + loss and classifier
// guidance compose on a network with every sampler, and every registered
// option is validated in one place (GuidanceRegistry*).
#include "tweedie/guide/guidance.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "tweedie/models/net_denoiser.h"

namespace tweedie {

template <>
Registry<GuidanceRuleInfo>& registry<GuidanceRuleInfo>() {
  static Registry<GuidanceRuleInfo> r("guidance rule");
  return r;
}

std::vector<const GuidanceRuleInfo*> guidance_rules() {
  std::vector<const GuidanceRuleInfo*> out;
  for (const auto& r : registry<GuidanceRuleInfo>().all()) out.push_back(&r);
  std::stable_sort(out.begin(), out.end(), [](auto* a, auto* b) { return a->order < b->order; });
  return out;
}

const GuidanceRuleInfo* guidance_rule_of(const std::string& option) {
  for (const auto& r : registry<GuidanceRuleInfo>().all()) {
    if (r.find_option(option)) return &r;
    if (std::find(r.attachments.begin(), r.attachments.end(), option) != r.attachments.end()) return &r;
  }
  return nullptr;
}

const MethodOption* GuidanceRuleInfo::find_option(const std::string& n) const {
  for (const auto& o : options)
    if (o.name == n) return &o;
  return nullptr;
}

GuidanceResource GuidanceRuleInfo::resource(const std::string& option) const {
  auto it = resources.find(option);
  return it == resources.end() ? GuidanceResource::None : it->second;
}

bool GuidanceRuleInfo::active(const GuidanceOptions& g) const {
  if (on) return on(g);
  const MethodOption& s = options.front();
  return s.words || on_given ? g.has(s.name) : g.number(s.name) != neutral;
}

// ---------------------------------------------------------------- values

namespace {

const MethodOption& declared(const std::string& option) {
  const GuidanceRuleInfo* r = guidance_rule_of(option);
  check(r != nullptr, "unknown guidance option --", option);
  const MethodOption* o = r->find_option(option);
  check(o != nullptr, "--", option, " takes an object (attach it), not a value");
  return *o;
}

}  // namespace

GuidanceOptions::GuidanceOptions(double cfg) {
  if (cfg != 1.0) set("cfg", cfg);
}

GuidanceOptions& GuidanceOptions::set(const std::string& option, double v) {
  const MethodOption& o = declared(option);
  check(!o.words, "--", option, " takes a word, not the number ", v);
  o.validate(v, "");
  numbers_[option] = v;
  return *this;
}

GuidanceOptions& GuidanceOptions::set(const std::string& option, const std::string& text) {
  const MethodOption& o = declared(option);
  if (!o.words) return set(option, o.parse(text, ""));
  texts_[option] = text;
  objects_.erase(option);  // a resolved object of an earlier text
  return *this;
}

GuidanceOptions& GuidanceOptions::attach(const std::string& option, std::any object) {
  check(guidance_rule_of(option) != nullptr, "unknown guidance option --", option);
  objects_[option] = std::move(object);
  return *this;
}

bool GuidanceOptions::has(const std::string& option) const {
  return numbers_.count(option) || texts_.count(option) || objects_.count(option);
}

double GuidanceOptions::number(const std::string& option) const {
  auto it = numbers_.find(option);
  return it != numbers_.end() ? it->second : declared(option).dflt;
}

std::string GuidanceOptions::text(const std::string& option) const {
  auto it = texts_.find(option);
  return it != texts_.end() ? it->second : declared(option).text_dflt;
}

const std::any& GuidanceOptions::object_any(const std::string& option) const {
  auto it = objects_.find(option);
  if (it != objects_.end()) return it->second;
  const GuidanceRuleInfo* r = guidance_rule_of(option);
  check(r != nullptr, "unknown guidance option --", option);
  const GuidanceResource kind = r->resource(option);
  const std::string t = r->find_option(option) ? text(option) : "";
  std::any made;
  if (kind == GuidanceResource::ClassIndex && !resolve) {  // the library reads an index
    size_t pos = 0;
    long long k = -1;
    try {
      k = std::stoll(t, &pos);
    } catch (const std::exception&) {
      pos = 0;
    }
    check(pos > 0 && pos == t.size() && k >= 0, "--", option, ": '", t, "' is not a class index");
    made = int64_t(k);
  } else {
    check(kind != GuidanceResource::None && resolve && !t.empty(), "--", option, ": nothing given");
    made = resolve(option, t, kind);
  }
  return objects_[option] = std::move(made);
}

bool GuidanceOptions::on(const std::string& rule) const {
  return registry<GuidanceRuleInfo>().find(rule).active(*this);
}

std::string GuidanceOptions::describe() const {
  std::string o;
  for (const GuidanceRuleInfo* r : guidance_rules())
    if (r->describe && (r->name == "cfg" || r->active(*this))) {
      const std::string part = r->describe(*this);
      o = r->name == "cfg" ? part + o : o + part;
    }
  return o;
}

std::pair<double, double> parse_number_pair(const std::string& v, const std::string& option, bool allow_inf) {
  const auto comma = v.find(',');
  auto num = [&](const std::string& t) {
    if (allow_inf && t == "inf") return double(INFINITY);
    try {
      size_t pos = 0;
      double x = std::stod(t, &pos);
      if (pos == t.size() && std::isfinite(x)) return x;
    } catch (const std::exception&) {
    }
    fail("--", option, " expects two numbers A,B, got '", v, "'");
  };
  if (comma == std::string::npos) fail("--", option, " expects two numbers A,B, got '", v, "'");
  return {num(v.substr(0, comma)), num(v.substr(comma + 1))};
}

// ---------------------------------------------------------------- build

DenoiserPtr make_guidance(DenoiserPtr base, const GuidanceOptions& g) {
  check(base != nullptr, "make_guidance: no base denoiser");
  const auto net = std::dynamic_pointer_cast<NetDenoiser>(base);
  const auto rules = guidance_rules();
  // What the rules that are on take over.
  std::map<std::string, std::string> absorbed;  // rule -> the rule doing its work
  for (const GuidanceRuleInfo* r : rules)
    if (!r->absorbs.empty() && r->active(g)) {
      auto [it, fresh] = absorbed.emplace(r->absorbs, r->switch_name());
      check(fresh, "--", it->second, " and --", r->switch_name(), " both replace ", r->absorbs, "; give one");
    }
  DenoiserPtr d = std::move(base);
  for (const GuidanceRuleInfo* r : rules) {
    const bool on = r->active(g);
    for (const MethodOption& o : r->options) {
      if (!g.has(o.name) || o.name == "cfg") continue;
      check(!r->conditional || g.conditional, "--", o.name, " needs ", g.condition_from);
      if (!on && o.name != r->switch_name())
        fail("--", o.name, " ",
             r->off_hint.empty() ? "needs --" + r->switch_name() : r->off_hint);
    }
    if (!on) continue;
    check(!r->conditional || g.conditional, "--", r->switch_name(), " needs ", g.condition_from);
    check(r->network_reason.empty() || net != nullptr, "--", r->switch_name(), " needs a network model (",
          r->network_reason, ")");
    check(!r->needs_cfg || g.guides(), "--", r->switch_name(), " needs guidance: give --cfg other than 1");
    if (absorbed.count(r->name)) continue;
    d = r->build(d, g, net);
  }
  return d;
}

}  // namespace tweedie
