// Process base: sampling-space algebra shared by every process, and the
// process factory. See process.h for the conventions.
#include "tweedie/process/process.h"

#include <cmath>

#include "tweedie/core/error.h"

namespace tweedie {

double Process::lambda(double s) const {
  if (space() == Space::Flow) return std::log1p(-s) - std::log(s);  // log((1-s)/s)
  return -std::log(s);
}

double Process::s_of_lambda(double l) const {
  if (space() == Space::Flow) return 1.0 / (1.0 + std::exp(l));  // sigmoid(-l)
  return std::exp(-l);
}

torch::Tensor Process::add_noise(const torch::Tensor& x0, const torch::Tensor& eps, double s) const {
  return x0 * a(s) + eps * s;
}

torch::Tensor Process::ode_derivative(const torch::Tensor& x, const torch::Tensor& x0, double s) const {
  // Plain: (x - x0)/s. Flow: -x0 + (x - (1-s) x0)/s = (x - x0)/s as well.
  return (x - x0) / s;
}

double Process::shift_lambda(double s, double delta) const {
  if (delta == 0 || s == 0 || std::isinf(s)) return s;
  if (space() == Space::Flow && s >= 1.0) return s;
  return s_of_lambda(lambda(s) + delta);
}

Process::Ancestral Process::ancestral_step(double s, double s_next, double eta) const {
  if (s_next == 0 || eta == 0 || s_next >= s) return {s_next, 0.0, 1.0};
  const double vs = std::exp(-lambda(s)), vn = std::exp(-lambda(s_next));  // VE sigmas (vs may be inf)
  const double ratio = vn / vs;
  const double up = std::min(vn, eta * vn * std::sqrt(std::max(0.0, 1 - ratio * ratio)));
  const double down = std::sqrt(std::max(0.0, vn * vn - up * up));
  const double s_down = s_of_lambda(-std::log(down));
  return {s_down, a(s_next) * up, a(s_next) / a(s_down)};
}

torch::Tensor Process::noise_up(const torch::Tensor& x, const torch::Tensor& z, double s, double s_to) const {
  check(s_to >= s && a(s) > 0, "noise_up: cannot move from level ", s, " to ", s_to);
  const double keep = a(s_to) / a(s);
  return x * keep + z * std::sqrt(std::max(0.0, s_to * s_to - std::pow(s * keep, 2)));
}

double Process::s_at_timestep(double i) const {
  const double t0 = t_of(s_min()), t1 = t_of(s_max());
  return s_of(t0 + (t1 - t0) * i / (timesteps() - 1));
}

std::vector<std::string> process_names() {
  return {"vp", "vp:linear", "vp:cosine", "vp+ztsnr", "vp-cont", "vp-cont:cosine", "ve", "edm", "flow"};
}

ProcessPtr make_process(const std::string& spec) {
  std::string base = spec;
  bool ztsnr = false;
  auto plus = base.find("+ztsnr");
  if (plus != std::string::npos && plus + 6 == base.size()) {
    ztsnr = true;
    base = base.substr(0, plus);
  }
  if (base == "vp" || base == "vp:scaled_linear" || base == "vp:linear" || base == "vp:cosine") {
    VPDiscreteConfig c;
    if (base == "vp:linear") c.betas = BetaSchedule::Linear, c.beta_start = 1e-4, c.beta_end = 0.02;
    if (base == "vp:cosine") c.betas = BetaSchedule::Cosine;
    c.zero_terminal_snr = ztsnr;
    return make_vp_discrete(c);
  }
  if (ztsnr) fail("process '", spec, "': +ztsnr applies only to discrete VP tables (vp, vp:linear, vp:cosine)");
  if (base == "vp-cont" || base == "vp-cont:linear") return make_vp_continuous(VPContinuousKind::Linear);
  if (base == "vp-cont:cosine") return make_vp_continuous(VPContinuousKind::Cosine);
  if (base == "ve") return make_ve();
  if (base == "edm") return make_edm();
  if (base == "flow") return make_flow();
  std::string known;
  for (auto& n : process_names()) known += (known.empty() ? "" : ", ") + n;
  fail("unknown process '", spec, "' (known: ", known, ")");
}

}  // namespace tweedie
