#include "guidance_args.h"

#include <cmath>
#include <tuple>

#include "tweedie/core/error.h"
#include "tweedie/models/net_denoiser.h"

namespace tweedie::cli {

std::vector<Args::Opt> guidance_opts() {
  return {
      {"negative-class", "", false, "CFG pushes away from this class (name or index) instead of the unconditional model", ""},
      {"cfg-rescale", "", false, "CFG-rescale phi in [0, 1] (Lin et al. 2024): mix of the guided x0 rescaled to the conditional x0's std (0.7 in the paper)", "0"},
      {"guidance-interval", "", false, "LO,HI: CFG only for sigma in (LO, HI] (Kynkaanniemi et al. 2024; HI may be inf); one conditional evaluation elsewhere", ""},
      {"cfg-schedule", "", false, "guidance strength (cfg - 1) times f(tau), tau = normalized model time, 1 = pure noise: constant (1), linear (2(1-tau)), cosine (1+cos(pi tau))", "constant"},
      {"dynamic-threshold", "", false, "Imagen dynamic thresholding of x0 at this percentile p in (0, 1), e.g. 0.995", ""},
      {"dynamic-threshold-max", "", false, "upper bound of the dynamic threshold (diffusers' sample_max_value)", "inf"},
      {"cads-noise", "", false, "CADS condition annealing (Sadat et al. 2024) with this noise scale on the class embedding, e.g. 0.25 (network models)", ""},
      {"cads-tau", "", false, "CADS TAU1,TAU2: clean condition below TAU1, noise alone above TAU2, linear between (normalized model time, 1 = pure noise)", "0.6,0.9"},
      {"cads-psi", "", false, "CADS rescale mix psi in [0, 1] (0 = no rescale)", "1"},
  };
}

namespace {

// "A,B" -> two numbers (B may be "inf" when allow_inf).
std::pair<double, double> number_pair(const Args& a, const std::string& name, bool allow_inf) {
  const std::string v = a.str(name);
  const auto comma = v.find(',');
  auto num = [&](const std::string& t) {
    if (allow_inf && t == "inf") return double(INFINITY);
    try {
      size_t pos = 0;
      double x = std::stod(t, &pos);
      if (pos == t.size() && std::isfinite(x)) return x;
    } catch (const std::exception&) {
    }
    fail("--", name, " expects two numbers A,B, got '", v, "'");
  };
  if (comma == std::string::npos) fail("--", name, " expects two numbers A,B, got '", v, "'");
  return {num(v.substr(0, comma)), num(v.substr(comma + 1))};
}

}  // namespace

GuidanceOptions guidance_options(const Args& a, const LoadedModel& model, double cfg, bool labelled,
                                 const std::string& needs, uint64_t seed) {
  GuidanceOptions g;
  g.cfg = cfg;
  // Options that modify CFG need labels and a scale other than 1.
  for (const char* o : {"negative-class", "cfg-rescale", "guidance-interval", "cfg-schedule"}) {
    if (!a.has(o)) continue;
    check(labelled, "--", o, " needs ", needs);
    check(cfg != 1.0, "--", o, " has no effect without guidance: give --cfg other than 1");
  }
  if (a.has("negative-class")) {
    const std::string k = a.str("negative-class");
    check(k != "all", "--negative-class takes one class, not 'all'");
    try {
      g.negative_class = class_labels(model, k, 1)[0].item<int64_t>();
    } catch (const Error& e) {
      fail("--negative-class: ", e.what());
    }
  }
  g.rescale = a.number("cfg-rescale");
  check(g.rescale >= 0 && g.rescale <= 1, "--cfg-rescale must be in [0, 1] (got ", g.rescale, ")");
  if (a.has("guidance-interval")) {
    auto [lo, hi] = number_pair(a, "guidance-interval", true);
    check(lo >= 0, "--guidance-interval: LO must be >= 0 (got ", a.str("guidance-interval"), ")");
    check(lo < hi, "--guidance-interval: LO must be below HI (got ", a.str("guidance-interval"), ")");
    g.interval = {lo, hi};
  }
  try {
    g.schedule = cfg_schedule_from_string(a.str("cfg-schedule"));
  } catch (const Error&) {
    fail("--cfg-schedule: unknown schedule '", a.str("cfg-schedule"), "' (constant, linear, cosine)");
  }
  if (a.has("dynamic-threshold")) {
    g.threshold = a.number("dynamic-threshold");
    check(g.threshold > 0 && g.threshold < 1, "--dynamic-threshold must be a percentile in (0, 1), e.g. 0.995 (got ",
          a.str("dynamic-threshold"), ")");
  }
  if (a.has("dynamic-threshold-max")) {
    check(a.has("dynamic-threshold"), "--dynamic-threshold-max needs --dynamic-threshold");
    g.threshold_max = a.str("dynamic-threshold-max") == "inf" ? INFINITY : a.number("dynamic-threshold-max");
    check(g.threshold_max >= 1, "--dynamic-threshold-max must be >= 1 (got ", a.str("dynamic-threshold-max"), ")");
  }
  for (const char* o : {"cads-tau", "cads-psi"}) check(!a.has(o) || a.has("cads-noise"), "--", o, " needs --cads-noise");
  if (a.has("cads-noise")) {
    check(labelled, "--cads-noise needs ", needs);
    check(dynamic_cast<NetDenoiser*>(model.denoiser.get()) != nullptr,
          "--cads-noise needs a network model (it noises the network's class embedding), not ", model.description);
    CADSOptions c;
    c.noise_scale = a.number("cads-noise");
    check(c.noise_scale > 0, "--cads-noise must be positive (got ", a.str("cads-noise"), ")");
    std::tie(c.tau1, c.tau2) = number_pair(a, "cads-tau", false);
    check(c.tau1 >= 0 && c.tau1 < c.tau2 && c.tau2 <= 1, "--cads-tau needs 0 <= TAU1 < TAU2 <= 1 (got ",
          a.str("cads-tau"), ")");
    c.psi = a.number("cads-psi");
    check(c.psi >= 0 && c.psi <= 1, "--cads-psi must be in [0, 1] (got ", a.str("cads-psi"), ")");
    g.cads = c;
    g.cads_seed = seed ^ 0x9E3779B97F4A7C15ull;  // independent of the start noise drawn from `seed`
  }
  return g;
}

}  // namespace tweedie::cli
