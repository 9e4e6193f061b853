// Sampler registry and the per-run context shared by every sampler.
#include "tweedie/sample/sampler.h"

#include "tweedie/nn/hooks.h"

#include <cmath>

#include "tweedie/core/error.h"

namespace tweedie {

template <>
Registry<SamplerInfo>& registry<SamplerInfo>() {
  static Registry<SamplerInfo> r("sampler");
  return r;
}

SamplerRun::SamplerRun(Denoiser& m, std::vector<double> s, Cond c, SamplerOptions o, torch::Generator g)
    : model(m), sigmas(std::move(s)), cond(std::move(c)), opt(o), gen(std::move(g)) {}

Prediction SamplerRun::denoise(const torch::Tensor& x, double s) {
  ++nfe;
  StepScope scope(step_ + step_offset, total_steps > 0 ? total_steps : steps());
  Prediction p = model.predict(x, s, cond);
  if (!torch::isfinite(p.x0()).all().item<bool>())
    fail("the denoiser returned non-finite values at sigma = ", s);
  return p;
}

torch::Tensor SamplerRun::randn_like(const torch::Tensor& x) {
  return at::randn(x.sizes(), gen, x.options());
}

void SamplerRun::report(int i, const torch::Tensor& x, const torch::Tensor& x0) {
  step_ = i + 1;
  if (callback) callback(StepInfo{i, steps(), sigmas[i], sigmas[i + 1], x, x0});
}

double SamplerRun::churn(torch::Tensor& x, double s) {
  if (opt.s_churn <= 0 || s < opt.s_tmin || s > opt.s_tmax || inverting()) return s;
  const Process& p = process();
  const double gamma = std::min(opt.s_churn / steps(), std::sqrt(2.0) - 1);
  const double s_hat = std::min(s * (1 + gamma), p.s_limit());
  if (!(s_hat > s)) return s;  // nothing to add at the flow limit s = 1
  check(gen.defined(), "--churn needs a seed (a generator)");
  const double keep = p.a(s_hat) / p.a(s);
  x = x * keep + randn_like(x) * (std::sqrt(std::max(0.0, s_hat * s_hat - std::pow(s * keep, 2))) * opt.s_noise);
  return s_hat;
}

torch::Tensor SamplerRun::renoise(const torch::Tensor& x_down, const Process::Ancestral& st, torch::Tensor z) {
  if (st.noise <= 0) return x_down;
  if (!z.defined()) z = randn_like(x_down);
  return x_down * st.scale + z * (st.noise * opt.s_noise);
}

namespace {
void validate_levels(const std::vector<double>& s, bool increasing) {
  check(s.size() >= 2, "sampling needs at least one step (got ", s.size(), " noise levels)");
  for (size_t i = 0; i < s.size(); ++i) {
    check(std::isfinite(s[i]) && s[i] >= 0, "noise level ", i, " is ", s[i], " (must be finite and >= 0)");
    if (i > 0)
      check(increasing ? s[i] > s[i - 1] : s[i] < s[i - 1], "noise levels must be strictly ",
            increasing ? "increasing" : "decreasing", " (at ", i, ")");
  }
}
}  // namespace

torch::Tensor run_sampler(const SamplerInfo& info, SamplerRun& run, torch::Tensor x) {
  validate_levels(run.sigmas, false);
  check(run.sigmas.front() <= run.process().s_limit(), "first noise level ", run.sigmas.front(),
        " is beyond the process's limit ", run.process().s_limit());
  check(!info.stochastic || run.gen.defined(), "sampler '", info.name, "' is stochastic and needs a generator");
  check(torch::isfinite(x).all().item<bool>(), "the start state contains NaN or infinity");
  run.values = run.opt.own.values_for(info.options, "sampler '" + info.name + "'");
  return info.fn(run, std::move(x));
}

void require_invertible(const SamplerInfo& info) {
  if (!info.invertible)
    fail("sampler '", info.name, "' cannot invert", info.stochastic ? " (it is stochastic)" : "",
         "; invertible samplers: ", [] {
           std::string s;
           for (auto& i : samplers())
             if (i.invertible) s += (s.empty() ? "" : ", ") + i.name;
           return s;
         }());
}

torch::Tensor run_inversion(const SamplerInfo& info, SamplerRun& run, torch::Tensor x) {
  require_invertible(info);
  validate_levels(run.sigmas, true);
  check(run.sigmas.front() > 0, "inversion must start above noise level 0");
  check(run.sigmas.back() <= run.process().s_limit(), "inversion target ", run.sigmas.back(),
        " is beyond the process's limit ", run.process().s_limit());
  check(torch::isfinite(x).all().item<bool>(), "the input contains NaN or infinity");
  run.values = run.opt.own.values_for(info.options, "sampler '" + info.name + "'");
  return info.fn(run, std::move(x));
}

}  // namespace tweedie
