// Adaptive Projected Guidance (apg.h). Verified in tests/test_guidance.cpp
// (APG*): at eta = 1 without momentum or clipping it equals CFG; at eta = 0
// the update is orthogonal to the conditional x0 per sample; the clipped
// update's norm is r; the momentum average over two steps matches a hand
// computation and restarts with a new run.
#include "tweedie/guide/apg.h"

#include <cmath>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/guide/guidance.h"
#include "tweedie/nn/hooks.h"

namespace tweedie {

torch::Tensor apg_update(const torch::Tensor& diff, const torch::Tensor& x0_cond, double eta, double norm_threshold) {
  const int64_t n = diff.size(0);
  auto d = diff.reshape({n, -1}).to(torch::kFloat64);
  if (norm_threshold > 0) {
    auto norm = d.norm(2, 1, true);
    d = d * torch::clamp_max(norm_threshold / norm.clamp_min(1e-30), 1.0);
  }
  auto u = x0_cond.reshape({n, -1}).to(torch::kFloat64);
  u = u / u.norm(2, 1, true).clamp_min(1e-30);
  auto parallel = (d * u).sum(1, true) * u;
  auto update = (d - parallel) + parallel * eta;
  return update.reshape(diff.sizes()).to(diff.scalar_type());
}

APGDenoiser::APGDenoiser(DenoiserPtr inner, CFGOptions cfg, APGOptions apg)
    : CFGDenoiser(std::move(inner), std::move(cfg)), apg_(apg) {
  check(apg_.eta >= 0 && apg_.eta <= 1, "APG eta must be in [0, 1] (got ", apg_.eta, ")");
  check(apg_.momentum > -1 && apg_.momentum < 1, "APG momentum must be in (-1, 1) (got ", apg_.momentum, ")");
  check(apg_.norm_threshold >= 0 && std::isfinite(apg_.norm_threshold), "APG norm threshold must be >= 0 (got ",
        apg_.norm_threshold, ")");
}

torch::Tensor APGDenoiser::combine(const torch::Tensor& x0_cond, const torch::Tensor& x0_neg, double w,
                                   const torch::Tensor&, double s) {
  torch::Tensor diff = x0_cond - x0_neg;
  if (apg_.momentum != 0) {
    // A new run: the step counter went back (or, outside a sampler, the level went up), or another batch.
    const int step = current_hook_context(s, 0).step;
    const bool restart = !running_.defined() || !running_.sizes().equals(diff.sizes()) ||
                         (step >= 0 ? step < last_step_ : s > last_s_);
    if (restart) running_ = torch::zeros_like(diff);
    running_ = diff + running_ * apg_.momentum;
    diff = running_;
    last_step_ = step, last_s_ = s;
  }
  return x0_cond + apg_update(diff, x0_cond, apg_.eta, apg_.norm_threshold) * (w - 1);
}

namespace {

DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions& g, const std::shared_ptr<NetDenoiser>&) {
  CFGOptions cfg = cfg_options(g, inner->process());
  return std::make_shared<APGDenoiser>(std::move(inner), std::move(cfg),
                                       APGOptions{g.number("apg"), g.number("apg-momentum"),
                                                  g.number("apg-norm-threshold")});
}

std::string describe(const GuidanceOptions& g) {
  std::ostringstream o;
  o << ", APG eta " << g.number("apg");
  if (g.number("apg-momentum") != 0) o << " momentum " << g.number("apg-momentum");
  if (g.number("apg-norm-threshold") > 0) o << " threshold " << g.number("apg-norm-threshold");
  return o.str();
}

// CFG's place: it replaces CFG's combination of the two branches.
GuidanceRuleRegistrar reg(
    GuidanceRuleInfo{"apg", "adaptive projected guidance: CFG's update without most of its part along x0_cond",
                     "Sadat et al. 2025", 40, build, describe}
        .option(MethodOption{"apg", 0,
                             "adaptive projected guidance with this weight eta of the update's part parallel to the "
                             "conditional x0 (0 as in the paper; 1 without momentum or threshold = plain CFG)"}
                    .in(0, 1))
        .option(MethodOption{"apg-momentum", 0, "APG momentum beta of the update across steps (-0.5 in the paper)"}
                    .in(-1, 1, true, true))
        .option(MethodOption{"apg-norm-threshold", 0, "APG: clip the update's norm to this r (0 = off)"}.at_least(0))
        .on_when_given()
        .needs_condition()
        .needs_guidance()
        .for_text_models()
        .does_the_work_of("cfg"));

}  // namespace
}  // namespace tweedie
