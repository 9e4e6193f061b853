// Restoration solver registry, validation, RePaint's time-travel path and the
// projection onto the noised measurement.
// The solvers: ddnm.cpp (DDNM, DDNM+), ddrm.cpp (DDRM), pigdm.cpp (PiGDM),
// dps.cpp (DPS), mcg.cpp (MCG), repaint.cpp (RePaint), blended.cpp (Blended
// Diffusion); baselines.cpp (A^+ y, bicubic) and tikhonov.cpp (Tikhonov).
#include "tweedie/restore/solver.h"

#include <cmath>
#include <map>

#include "tweedie/core/error.h"
#include "tweedie/sample/generate.h"

namespace tweedie {

template <>
Registry<RestoreSolverInfo>& registry<RestoreSolverInfo>() {
  static Registry<RestoreSolverInfo> r("solver");
  return r;
}

std::vector<int> time_travel_path(int steps, int length, int repeat) {
  check(steps >= 1, "time travel needs at least one step (got ", steps, ")");
  check(length >= 1, "time-travel length must be >= 1 (got ", length, ")");
  check(repeat >= 1, "time-travel repeat must be >= 1 (got ", repeat, ")");
  // RePaint counts t = steps-1 .. 0, then -1 for the final step; level index k = steps - 1 - t.
  std::map<int, int> jumps;
  for (int j = 0; j < steps - length; j += length) jumps[j] = repeat - 1;
  std::vector<int> path;
  int t = steps;
  while (t >= 1) {
    path.push_back(steps - 1 - --t);
    auto it = jumps.find(t);
    if (it != jumps.end() && it->second > 0) {
      --it->second;
      for (int l = 0; l < length; ++l) path.push_back(steps - 1 - ++t);
    }
  }
  path.push_back(steps);
  return path;
}

torch::Tensor project_to_noised_measurement(SamplerRun& run, const Measurement& m, const torch::Tensor& x, double s) {
  const Operator& A = *m.op;
  torch::Tensor ys = m.y.to(x.options());
  if (s > 0) ys = run.process().add_noise(ys, A.A(run.randn_like(x)), s);
  return x + A.pinv(ys - A.A(x));
}

MethodOption restore_eta_option(double dflt) {
  return MethodOption{"eta", dflt, "fresh-noise fraction of each step (DDIM/DDRM eta)"}.in(0, 1);
}

MethodOption restore_zeta_option() {
  return MethodOption{"zeta", 1, "step size zeta' of the measurement gradient (the step is zeta' / |y - A x0|)"}
      .at_least(0);
}

std::vector<MethodOption> time_travel_options() {
  return {MethodOption{"travel-length", 5, "time-travel (resampling) jump length L"}.at_least(1).whole(),
          MethodOption{"travel-repeat", 2, "time-travel (resampling) repeats r (1 = none)"}.at_least(1).whole()};
}

bool RestoreSolverInfo::declares(const std::string& option) const {
  for (const auto& o : options)
    if (o.name == option) return true;
  return false;
}

int restore_nfe(const RestoreSolverInfo& info, int steps, const RestoreOptions& opts) {
  if (info.baseline) return 0;
  const MethodValues o = info.values(opts);
  if (info.uses_sampler()) {  // a fresh one-step run of the sampler per step
    const SamplerInfo& s = find_sampler(o.text("sampler"));
    return (steps - 1) * (nfe_of(s, 2) - nfe_of(s, 1)) + nfe_of(s, 1);
  }
  if (!info.time_travel()) return steps;
  auto path = time_travel_path(steps, int(o.integer("travel-length")), int(o.integer("travel-repeat")));
  int down = 0;
  for (size_t i = 1; i < path.size(); ++i) down += path[i] > path[i - 1];
  return down;
}

torch::Tensor run_restore(const RestoreSolverInfo& info, SamplerRun& run, const Measurement& m, torch::Tensor x,
                          const RestoreOptions& o) {
  const auto& s = run.sigmas;
  check(s.size() >= 2, info.name, ": needs at least one step (got ", s.size(), " noise levels)");
  for (size_t i = 0; i < s.size(); ++i) {
    check(std::isfinite(s[i]) && s[i] >= 0, info.name, ": noise level ", i, " is ", s[i]);
    if (i > 0) check(s[i] < s[i - 1], info.name, ": noise levels must be strictly decreasing (at ", i, ")");
  }
  check(s.back() == 0, info.name, ": the last noise level must be 0 (got ", s.back(), ")");
  check(s.front() <= run.process().s_limit(), info.name, ": first noise level ", s.front(),
        " is beyond the process's limit ", run.process().s_limit());
  check(m.op != nullptr, info.name, ": no operator");
  if (m.decode) {
    check(info.decoder, info.name, " works in the sampling space of a pixel model; on a latent model use one that acts "
          "through the decoder (dps, psld, resample) or blend in latent space (blended, repaint with a latent mask)");
    check(!info.needs_decoder || m.encode || info.name != "psld", info.name, ": needs the model's encoder too");
    torch::NoGradGuard ng;
    m.op->check_x(m.decode(x.narrow(0, 0, 1)));
  } else {
    check(!info.needs_decoder, info.name, " works on latent models (the operator acts through their decoder); this "
          "model's states are its pixels: use dps");
    m.op->check_x(x);
  }
  m.op->check_y(m.y);
  check(m.y.size(0) == x.size(0), info.name, ": ", m.y.size(0), " measurements for ", x.size(0), " start states");
  check(std::isfinite(m.sigma_y) && m.sigma_y >= 0, info.name, ": sigma_y must be >= 0 (got ", m.sigma_y, ")");
  const MethodValues values = info.values(o);  // declared options, in range
  if (info.needs_svd) m.op->require_svd(info.name);
  check(!info.masks_only || m.op->is_mask(), info.name, " works on inpainting masks only, not on '", m.op->name(),
        "'");
  if (info.uses_sampler()) find_sampler(values.text("sampler"));  // validates the name
  check(run.gen.defined(), info.name, ": restoration solvers are stochastic and need a generator");
  check(torch::isfinite(x).all().item<bool>(), info.name, ": the start state contains NaN or infinity");
  check(torch::isfinite(m.y).all().item<bool>(), info.name, ": the measurement contains NaN or infinity");
  return info.fn(run, m, std::move(x), values);
}

}  // namespace tweedie
