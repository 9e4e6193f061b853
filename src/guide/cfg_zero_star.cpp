// CFG-Zero* (cfg_zero_star.h). Verified in tests/test_guidance.cpp
// (CFGZeroStar*): the guided prediction against the formula computed by hand
// in velocity (flow) and eps (VP) form, CFG where s* = 1, the conditional
// model at w = 1, and zero-init keeping the state for the first K steps of a
// run.
#include "tweedie/guide/cfg_zero_star.h"

#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/guide/guidance.h"
#include "tweedie/nn/hooks.h"

namespace tweedie {

torch::Tensor cfg_zero_star_scale(const torch::Tensor& cond, const torch::Tensor& uncond) {
  const int64_t n = cond.size(0);
  auto c = cond.reshape({n, -1}).to(torch::kFloat64), u = uncond.reshape({n, -1}).to(torch::kFloat64);
  return (c * u).sum(1) / (u * u).sum(1).clamp_min(1e-30);
}

namespace {
bool is_flow(const Process& p) { return p.name().rfind("flow", 0) == 0; }
}  // namespace

CFGZeroStarDenoiser::CFGZeroStarDenoiser(DenoiserPtr inner, CFGOptions cfg, int zero_init_steps)
    : CFGDenoiser(std::move(inner), std::move(cfg)), zero_init_(zero_init_steps), flow_(is_flow(process())) {
  check(zero_init_ >= 0, "CFG-Zero*: zero-init steps must be >= 0 (got ", zero_init_, ")");
  check(zero_init_ == 0 || flow_, "CFG-Zero*: zero-init (", zero_init_, " steps) is for flow processes; the model's is ",
        process().name());
}

torch::Tensor CFGZeroStarDenoiser::combine(const torch::Tensor& x0_cond, const torch::Tensor& x0_neg, double w,
                                           const torch::Tensor& x, double s) {
  const Process& p = process();
  const int step = current_hook_context(s, 0).step;
  if (step >= 0 && step < zero_init_)  // velocity 0: x0 is where the state stays
    return Prediction({PredKind::Velocity}, torch::zeros_like(x), x, s, p).x0().to(x0_cond.scalar_type());
  const PredKind k = flow_ ? PredKind::Velocity : PredKind::Eps;
  auto in = [&](const torch::Tensor& x0) { return Prediction::from_x0(x0, x, s, p).as({k}); };
  const torch::Tensor pc = in(x0_cond), pu = in(x0_neg);
  std::vector<int64_t> shape(pc.dim(), 1);
  shape[0] = pc.size(0);
  const torch::Tensor st = cfg_zero_star_scale(pc, pu).reshape(shape).to(pc.scalar_type());
  const torch::Tensor guided = pu * st + (pc - pu * st) * w;
  return Prediction({k}, guided, x, s, p).x0();
}

namespace {

DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions& g, const std::shared_ptr<NetDenoiser>&) {
  CFGOptions cfg = cfg_options(g, inner->process());
  return std::make_shared<CFGZeroStarDenoiser>(std::move(inner), std::move(cfg), int(g.number("cfg-zero-star")));
}

std::string describe(const GuidanceOptions& g) {
  std::ostringstream o;
  o << ", CFG-Zero* (zero-init " << g.number("cfg-zero-star") << ")";
  return o.str();
}

// CFG's place: it replaces CFG's combination of the two branches.
GuidanceRuleRegistrar reg(
    GuidanceRuleInfo{"cfg-zero-star", "CFG with an optimized scale of the unconditional branch and zero-init",
                     "Fan et al. 2025", 40, build, describe}
        .option(MethodOption{"cfg-zero-star", 0,
                             "CFG-Zero*: optimized scale s* = <p_c, p_u> / |p_u|^2 of the unconditional branch, and "
                             "this many zero-init steps K at the start (K > 0: flow models)"}
                    .at_least(0)
                    .whole())
        .on_when_given()
        .needs_condition()
        .needs_guidance()
        .for_text_models()
        .does_the_work_of("cfg"));

}  // namespace
}  // namespace tweedie
