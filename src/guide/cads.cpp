// CADS (Sadat et al. 2024, "CADS: Unleashing the Diversity of Diffusion
// Models through Condition-Annealed Sampling"):
//   y <- psi * rescale(y_hat) + (1 - psi) * y_hat,
//   y_hat = sqrt(gamma(tau)) y + s sqrt(1 - gamma(tau)) n,
// on the class embedding of the network ("label_emb" hook site) for rows with
// a real class; see cads.h. Verified in tests/test_guidance.cpp: gamma against
// its closed form, the noising formula on hand-made tensors (psi = 1 restores
// each row's mean and std), CADS is the plain network bit for bit where
// gamma = 1 and on null-class rows, it equals a hand-installed hook with the
// same noise otherwise, the same seed reproduces, and under CFG the null
// branch stays untouched.
#include "tweedie/guide/cads.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <sstream>
#include <tuple>

#include "tweedie/core/error.h"
#include "tweedie/guide/cfg_schedule.h"
#include "tweedie/guide/guidance.h"

namespace tweedie {

void CADSOptions::validate() const {
  check(tau1 >= 0 && tau1 < tau2 && tau2 <= 1, "CADS needs 0 <= tau1 < tau2 <= 1 (got tau1 = ", tau1,
        ", tau2 = ", tau2, ")");
  check(noise_scale > 0 && std::isfinite(noise_scale), "CADS noise scale must be positive (got ", noise_scale, ")");
  check(psi >= 0 && psi <= 1, "CADS psi must be in [0, 1] (got ", psi, ")");
}

double cads_gamma(double tau, double tau1, double tau2) {
  if (tau <= tau1) return 1.0;
  if (tau >= tau2) return 0.0;
  return (tau2 - tau) / (tau2 - tau1);
}

torch::Tensor cads_noise_condition(const torch::Tensor& y, const torch::Tensor& noise, double gamma, double noise_scale,
                                   double psi) {
  check(y.dim() == 2 && noise.sizes() == y.sizes(), "CADS: condition ", y.sizes(), " and noise ", noise.sizes(),
        " must both be [N, D]");
  auto y_hat = y * std::sqrt(gamma) + noise * (noise_scale * std::sqrt(1.0 - gamma));
  if (psi == 0) return y_hat;
  auto mean_in = y.mean(1, true), std_in = y.std(1, true, true);
  auto mean_hat = y_hat.mean(1, true), std_hat = y_hat.std(1, true, true);
  auto resc = (y_hat - mean_hat) / std_hat * std_in + mean_in;
  return resc * psi + y_hat * (1.0 - psi);
}

CADSDenoiser::CADSDenoiser(std::shared_ptr<NetDenoiser> inner, CADSOptions opt, uint64_t seed)
    : inner_(std::move(inner)), opt_(opt), gen_(at::make_generator<at::CPUGeneratorImpl>(seed)) {
  check(inner_ != nullptr, "CADS needs a network model");
  opt_.validate();
  check(inner_->network().num_classes() > 0, "CADS needs a class-conditional network (its noise goes on the class embedding)");
}

Prediction CADSDenoiser::predict(const torch::Tensor& x, double s, const Cond& c) {
  const double gamma = cads_gamma(normalized_time(inner_->process(), s), opt_.tau1, opt_.tau2);
  if (gamma == 1.0 || !c.labels.defined()) return inner_->predict(x, s, c);
  auto rows = (c.labels.reshape({-1}) >= 0).nonzero().reshape({-1});
  if (rows.numel() == 0) return inner_->predict(x, s, c);

  // The class-embedding rewrite, added to the network's hooks for this call.
  Network& net = inner_->network();
  bool fired = false;
  ScopedHook hook(net.hooks(), "label_emb", [&](const std::string&, const torch::Tensor& y, const HookContext&) {
    check(y.dim() == 2 && y.size(0) == c.labels.numel(), "CADS: class embedding of shape ", y.sizes(), " for ",
          c.labels.numel(), " labels");
    fired = true;
    auto r = rows.to(y.device());
    auto noise = at::randn({r.numel(), y.size(1)}, gen_, torch::kFloat32).to(y.options());
    auto sel = y.index_select(0, r);
    return y.index_copy(0, r, cads_noise_condition(sel, noise, gamma, opt_.noise_scale, opt_.psi));
  });
  Prediction out = inner_->predict(x, s, c);
  check(fired, "CADS: the ", net.arch(), " network has no 'label_emb' hook site");
  return out;
}

}  // namespace tweedie

namespace tweedie {
namespace {

CADSOptions cads_options(const GuidanceOptions& g) {
  CADSOptions c;
  c.noise_scale = g.number("cads-noise");
  const std::string t = g.text("cads-tau");
  std::tie(c.tau1, c.tau2) = parse_number_pair(t, "cads-tau", false);
  check(c.tau1 >= 0 && c.tau1 < c.tau2 && c.tau2 <= 1, "--cads-tau needs 0 <= TAU1 < TAU2 <= 1 (got ", t, ")");
  c.psi = g.number("cads-psi");
  return c;
}

DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions& g, const std::shared_ptr<NetDenoiser>& net) {
  check(inner == net, "CADS goes directly on the network");
  return std::make_shared<CADSDenoiser>(net, cads_options(g), g.seed);
}

std::string describe(const GuidanceOptions& g) {
  const CADSOptions c = cads_options(g);
  std::ostringstream o;
  o << ", CADS tau " << c.tau1 << "-" << c.tau2 << " noise " << c.noise_scale << " psi " << c.psi;
  return o.str();
}

// Innermost: the noise goes on the network's class embedding in each call.
GuidanceRuleRegistrar reg(GuidanceRuleInfo{"cads", "condition-annealed sampling: noise on the class embedding",
                                           "Sadat et al. 2024", 10, build, describe}
                              .option(MethodOption{"cads-noise", 0,
                                                   "CADS condition annealing with this noise scale on the class "
                                                   "embedding, e.g. 0.25 (network models)"}
                                          .at_least(0, true))
                              .option(MethodOption::text("cads-tau", "0.6,0.9",
                                                         "CADS TAU1,TAU2: clean condition below TAU1, noise alone above "
                                                         "TAU2, linear between (normalized model time, 1 = pure noise)"))
                              .option(MethodOption{"cads-psi", 1, "CADS rescale mix psi (0 = no rescale)"}.in(0, 1))
                              .needs_network("it noises the network's class embedding")
                              .needs_condition()
                              .on_class_labels());

}  // namespace
}  // namespace tweedie
