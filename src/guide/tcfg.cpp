// TCFG (tcfg.h). Verified in tests/test_guidance.cpp (TCFG*): the damped
// unconditional eps against the top singular direction computed in closed
// form from the 2 x 2 Gram matrix, d = 0 and parallel branches are CFG, and
// the rule through the registry.
#include "tweedie/guide/tcfg.h"

#include <cmath>
#include <sstream>

#include <torch/linalg.h>

#include "tweedie/core/error.h"
#include "tweedie/guide/guidance.h"

namespace tweedie {

torch::Tensor tangential_damping(const torch::Tensor& eps_cond, const torch::Tensor& eps_uncond, double d) {
  const int64_t n = eps_cond.size(0);
  auto u = eps_uncond.reshape({n, 1, -1}).to(torch::kFloat64), c = eps_cond.reshape({n, 1, -1}).to(torch::kFloat64);
  auto vh = std::get<2>(torch::linalg::svd(torch::cat({u, c}, 1), false, c10::nullopt));  // [N, 2, D]
  auto v1 = vh.narrow(1, 0, 1);                                             // [N, 1, D]
  auto along = (u * v1).sum(2, true) * v1;
  return (u - (u - along) * d).reshape(eps_uncond.sizes()).to(eps_uncond.scalar_type());
}

TCFGDenoiser::TCFGDenoiser(DenoiserPtr inner, CFGOptions cfg, double damping)
    : CFGDenoiser(std::move(inner), std::move(cfg)), damping_(damping) {
  check(damping_ >= 0 && damping_ <= 1, "TCFG damping must be in [0, 1] (got ", damping_, ")");
}

torch::Tensor TCFGDenoiser::combine(const torch::Tensor& x0_cond, const torch::Tensor& x0_neg, double w,
                                    const torch::Tensor& x, double s) {
  const Process& p = process();
  const torch::Tensor ec = Prediction::from_x0(x0_cond, x, s, p).eps();
  const torch::Tensor eu = tangential_damping(ec, Prediction::from_x0(x0_neg, x, s, p).eps(), damping_);
  return Prediction({PredKind::Eps}, eu + (ec - eu) * w, x, s, p).x0();
}

namespace {

DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions& g, const std::shared_ptr<NetDenoiser>&) {
  CFGOptions cfg = cfg_options(g, inner->process());
  return std::make_shared<TCFGDenoiser>(std::move(inner), std::move(cfg), g.number("tcfg"));
}

std::string describe(const GuidanceOptions& g) {
  std::ostringstream o;
  o << ", TCFG " << g.number("tcfg");
  return o.str();
}

// CFG's place: it replaces CFG's combination of the two branches.
GuidanceRuleRegistrar reg(
    GuidanceRuleInfo{"tcfg", "CFG with the unconditional prediction's tangential component damped",
                     "Kwon et al. 2025", 40, build, describe}
        .option(MethodOption{"tcfg", 0,
                             "tangential damping CFG: damp this share of the unconditional eps's component off the "
                             "branches' principal direction (1 = the paper's TCFG, 0 = CFG)"}
                    .in(0, 1))
        .needs_condition()
        .needs_guidance()
        .for_text_models()
        .does_the_work_of("cfg"));

}  // namespace
}  // namespace tweedie
