// Inversion methods: the registry, input validation, the helpers the methods
// share, and the plainest method, DDIM inversion.
//
// DDIM inversion (Song et al. 2021, DDIM, Sec. 4.3; Dhariwal & Nichol 2021,
// App. F): run a deterministic sampler backwards on the increasing levels,
// x(s') = a(s') x0(x, s) + s' eps(x, s), i.e. the step from s' down to s with
// the noise estimate taken at the lower level s instead of at s'. The
// mismatch makes the round trip approximate; it grows with the step size and
// with the guidance scale (CFG amplifies the estimate's dependence on x).
// Any invertible sampler can be run this way (run_inversion), at any
// guidance scale (CFG at w both ways).
// Verified (tests/test_edit.cpp): the round trip on the default model is
// close at w = 1 and its error grows with w (1 < 3 < 7); on the Gaussian
// mixture it converges as the steps grow.
#include "tweedie/edit/inversion.h"

#include <algorithm>
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/guide/cfg.h"

namespace tweedie {

template <>
Registry<InversionMethodInfo>& registry<InversionMethodInfo>() {
  static Registry<InversionMethodInfo> r("inversion method");
  return r;
}

namespace {
void check_batch(const torch::Tensor& x, const Cond& c) {
  check(x.defined() && x.dim() >= 2 && x.size(0) >= 1, "inversion: the data must be a batch [N, ...]");
  check(torch::isfinite(x).all().item<bool>(), "inversion: the data contains NaN or infinity");
  check(!c.labels.defined() || c.labels.numel() == x.size(0), "inversion: ", c.labels.numel(),
        " class labels for a batch of ", x.size(0));
}
}  // namespace

Inversion invert(const std::string& method, const DenoiserPtr& model, const std::vector<double>& sigmas,
                 const torch::Tensor& x, const Cond& c, const InversionOptions& o) {
  check(model != nullptr, "inversion: no model");
  check_batch(x, c);
  check(std::isfinite(o.cfg), "inversion: the cfg scale must be finite");
  return find_inversion_method(method).invert(model, sigmas, x, c, o);
}

torch::Tensor decode(const DenoiserPtr& model, const Inversion& inv, const Cond& c, const InversionOptions& o) {
  check(model != nullptr, "inversion: no model");
  check(inv.latent.defined(), "inversion: nothing to decode (empty inversion)");
  check(!c.labels.defined() || c.labels.numel() == inv.latent.size(0), "inversion: ", c.labels.numel(),
        " class labels for a batch of ", inv.latent.size(0));
  if (inv.steps() == 0) return inv.latent.clone();
  return find_inversion_method(inv.method).decode(model, inv, c, o);
}

std::vector<double> schedule_tail(const std::vector<double>& sigmas, double strength) {
  check(std::isfinite(strength) && strength >= 0 && strength <= 1, "strength must be in [0, 1] (got ", strength, ")");
  check(sigmas.size() >= 2 && sigmas.back() == 0, "edit: the schedule must end at noise level 0");
  const int steps = int(sigmas.size()) - 1, k = int(std::lround(strength * steps));
  return std::vector<double>(sigmas.end() - k - 1, sigmas.end());
}

namespace edit_detail {

DenoiserPtr guided(const DenoiserPtr& model, double w) {
  return w == 1.0 ? model : std::make_shared<CFGDenoiser>(model, w);
}

std::vector<double> levels(const std::vector<double>& sigmas) {
  check(sigmas.size() >= 2 && sigmas.back() == 0, "inversion: the schedule must end at noise level 0 (got ",
        sigmas.size(), " levels ending at ", sigmas.empty() ? NAN : sigmas.back(), ")");
  for (size_t i = 1; i < sigmas.size(); ++i)
    check(std::isfinite(sigmas[i - 1]) && sigmas[i] < sigmas[i - 1], "inversion: the schedule must be strictly decreasing (at ", i, ")");
  return std::vector<double>(sigmas.begin(), sigmas.end() - 1);
}

Inversion start(const std::string& method, const std::vector<double>& sigmas, const Cond& c, const InversionOptions& o) {
  Inversion inv;
  inv.method = method;
  inv.sigmas = levels(sigmas);
  inv.source = c;
  inv.options = o;
  inv.options.progress = {};
  return inv;
}

torch::Tensor transport(const Process& p, const torch::Tensor& x, const torch::Tensor& eps, double s, double s_to) {
  return ddim_step(p, Prediction({PredKind::Eps}, eps, x, s, p), s_to);
}

torch::Tensor sample_down(Denoiser& d, const Inversion& inv, const Cond& c, const InversionOptions& o,
                          const std::string& sampler, const SamplerOptions& sopt) {
  SamplerRun run(d, inv.sigmas, c, sopt, o.gen);
  run.callback = progress_callback(o, 0, inv.steps());
  return run_sampler(find_sampler(sampler), run, inv.latent);
}

StepCallback progress_callback(const InversionOptions& o, int offset, int total) {
  if (!o.progress) return {};
  return [f = o.progress, offset, total](const StepInfo& st) { f(offset + st.step + 1, total); };
}

torch::Tensor run_with_step_edit(const SamplerInfo& info, SamplerRun& run, torch::Tensor x,
                                 const std::function<torch::Tensor(int, const torch::Tensor&)>& edit) {
  const StepCallback outer = run.callback;
  torch::Tensor last;
  run.callback = [&](const StepInfo& st) {
    last = edit(st.step, st.x);
    st.x.copy_(last);  // in place: the sampler continues from the tensor it reported
    if (outer) outer(st);
  };
  torch::Tensor out;
  try {
    out = run_sampler(info, run, std::move(x));
  } catch (...) {
    run.callback = outer;
    throw;
  }
  run.callback = outer;
  check(!last.defined() || torch::equal(out, last), "sampler '", info.name,
        "' does not continue from the state it reports, so it cannot be edited step by step; use ddim");
  return out;
}

}  // namespace edit_detail

namespace {

Inversion ddim_invert(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x, const Cond& c,
                      const InversionOptions& o) {
  const SamplerInfo& sampler = find_sampler(o.sampler);
  require_invertible(sampler);
  Inversion inv = edit_detail::start("ddim", sigmas, c, o);
  auto x64 = x.to(torch::kFloat64);
  inv.trajectory.assign(inv.sigmas.size(), torch::Tensor());
  inv.trajectory.back() = x64;
  if (inv.steps() == 0) {
    inv.latent = x64;
    return inv;
  }
  DenoiserPtr d = edit_detail::guided(model, o.cfg);
  SamplerRun run(*d, std::vector<double>(inv.sigmas.rbegin(), inv.sigmas.rend()), c, o.sampler_options, o.gen);
  const StepCallback progress = edit_detail::progress_callback(o, 0, inv.steps());
  const int last = inv.steps();
  run.callback = [&](const StepInfo& st) {
    inv.trajectory[last - 1 - st.step] = st.x.clone();
    if (progress) progress(st);
  };
  inv.latent = run_inversion(sampler, run, x64);
  inv.trajectory.front() = inv.latent;
  inv.nfe = run.nfe;
  return inv;
}

torch::Tensor ddim_decode(const DenoiserPtr& model, const Inversion& inv, const Cond& c, const InversionOptions& o) {
  return edit_detail::sample_down(*edit_detail::guided(model, o.cfg), inv, c, o, inv.options.sampler,
                                  inv.options.sampler_options);
}

InversionMethodRegistrar reg(InversionMethodInfo{"ddim", "DDIM inversion: an invertible sampler (--sampler, default ddim) run backwards at cfg w",
                              "Song et al. 2021, DDIM; Dhariwal & Nichol 2021", ddim_invert, ddim_decode});

}  // namespace
}  // namespace tweedie
