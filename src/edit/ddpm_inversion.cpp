// Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kulikov & Michaeli
// 2024, "An Edit Friendly DDPM Noise Space: Inversion and Manipulations",
// CVPR) and CycleDiffusion's DPM-encoder (Wu & De la Torre 2023, "A Latent
// Space of Stochastic Diffusion Models for Zero-Shot Image Editing and
// Guidance", ICCV).
//
// A DDPM-type step s -> s' (the ancestral split with noise amount eta,
// Process::ancestral_step; eta = 1 is DDPM's posterior) is
//   x' = mu(x) + noise z,   mu(x) = scale * DDIM(x -> s_down),
// so any chain of states x_0 (top) ... x_K (the data) is reproduced exactly by
// sampling with the noises
//   z_k = (x_{k+1} - mu(x_k)) / noise_k
// extracted with the model at the states of the chain. The methods differ in
// the chain:
//   ddpm  (edit-friendly): every x_k drawn independently from q(x_k | data),
//         x_k = a(s_k) data + s_k n_k — the z_k then carry the image's
//         structure, and an edit keeps it;
//   cycle (CycleDiffusion): x_0 ~ q(x_0 | data), then x_{k+1} from DDPM's
//         posterior q(x_{k+1} | x_k, data) (Process::ancestral_step at eta = 1
//         with the true data as x0).
// Decoding runs the same steps with the stored z_k under any condition; the
// source condition gives the data back (each step lands on the chain's next
// state to rounding, so errors do not accumulate). An edit of strength t
// inverts only the last round(t K) steps (schedule_tail): the paper's
// T_skip. Guidance (CFG at w) is applied both when extracting and decoding.
// Verified (tests/test_edit.cpp): exact reconstruction (float64 rounding) on
// the Gaussian mixture and on the default model for both chains, noises
// that look standard normal, and edits that move toward the target class.
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/edit/edit_method.h"
#include "tweedie/edit/inversion.h"

namespace tweedie {
namespace {

// Extract the noises of the chain `xs` (xs[k] at inv.sigmas[k]).
void extract(Inversion& inv, Denoiser& d, const std::vector<torch::Tensor>& xs, const Cond& c,
             const InversionOptions& o) {
  const Process& p = d.process();
  SamplerRun run(d, inv.sigmas, c);
  for (int k = 0; k < inv.steps(); ++k) {
    const auto st = p.ancestral_step(inv.sigmas[k], inv.sigmas[k + 1], o.eta);
    check(st.noise > 0, "ddpm inversion: step ", k, " adds no noise (eta ", o.eta, "); it needs eta > 0");
    const auto mean = ddim_step(p, run.denoise(xs[k], inv.sigmas[k]), st.s_down) * st.scale;
    inv.noises.push_back((xs[k + 1] - mean) / st.noise);
    if (o.progress) o.progress(k + 1, inv.steps());
  }
  inv.nfe = run.nfe;
}

Inversion invert_chain(const std::string& method, const DenoiserPtr& model, const std::vector<double>& sigmas,
                       const torch::Tensor& x, const Cond& c, const InversionOptions& o) {
  check(o.gen.defined(), method, " inversion draws noise and needs a generator (a seed)");
  check(o.eta > 0 && o.eta <= 1, method, " inversion: eta must be in (0, 1] (got ", o.eta, ")");
  Inversion inv = edit_detail::start(method, sigmas, c, o);
  const Process& p = model->process();
  const auto data = x.to(torch::kFloat64);
  const int n = inv.steps();
  std::vector<torch::Tensor> xs(n + 1);
  xs[n] = data;
  auto randn = [&] { return at::randn(data.sizes(), o.gen, data.options()); };
  if (method == "ddpm") {
    for (int k = 0; k < n; ++k) xs[k] = p.add_noise(data, randn(), inv.sigmas[k]);
  } else if (n > 0) {
    xs[0] = p.add_noise(data, randn(), inv.sigmas[0]);
    for (int k = 0; k + 1 < n; ++k) {
      const auto st = p.ancestral_step(inv.sigmas[k], inv.sigmas[k + 1], 1.0);
      const auto down = ddim_step(p, Prediction::from_x0(data, xs[k], inv.sigmas[k], p), st.s_down);
      xs[k + 1] = down * st.scale + randn() * st.noise;
    }
  }
  inv.latent = xs[0];
  DenoiserPtr d = edit_detail::guided(model, o.cfg);
  extract(inv, *d, xs, c, o);
  return inv;
}

Inversion ddpm_invert(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x,
                      const Cond& c, const InversionOptions& o) {
  return invert_chain("ddpm", model, sigmas, x, c, o);
}

Inversion cycle_invert(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x,
                       const Cond& c, const InversionOptions& o) {
  return invert_chain("cycle", model, sigmas, x, c, o);
}

torch::Tensor ddpm_decode(const DenoiserPtr& model, const Inversion& inv, const Cond& c, const InversionOptions& o) {
  check(int(inv.noises.size()) == inv.steps(), inv.method, " inversion: ", inv.noises.size(), " noises for ",
        inv.steps(), " steps");
  DenoiserPtr d = edit_detail::guided(model, o.cfg);
  const Process& p = d->process();
  SamplerRun run(*d, inv.sigmas, c);
  torch::Tensor x = inv.latent;
  for (int k = 0; k < inv.steps(); ++k) {
    const auto st = p.ancestral_step(inv.sigmas[k], inv.sigmas[k + 1], inv.options.eta);
    Prediction pr = run.denoise(x, inv.sigmas[k]);
    x = run.renoise(ddim_step(p, pr, st.s_down), st, inv.noises[k]);
    run.report(k, x, pr.x0());
    if (o.progress) o.progress(k + 1, inv.steps());
  }
  return x;
}

InversionMethodRegistrar reg1(InversionMethodInfo{"ddpm",
                               "edit-friendly DDPM inversion: independent noisy states, per-step noises that make DDPM "
                               "sampling (--eta) reproduce the data",
                               "Huberman-Spiegelglas et al. 2024, An Edit Friendly DDPM Noise Space", ddpm_invert,
                               ddpm_decode}.reconstructs_exactly());
InversionMethodRegistrar reg2(InversionMethodInfo{"cycle",
                               "CycleDiffusion's DPM-encoder: a DDPM posterior chain from the data, and the per-step "
                               "noises that reproduce it",
                               "Wu & De la Torre 2023, CycleDiffusion", cycle_invert, ddpm_decode}.reconstructs_exactly());

}  // namespace
namespace {

// Edits by an inversion whose decoding takes other conditions (ddpm, cycle):
// invert the last `strength` of the schedule under the source, decode under the target.
EditResult inversion_edit(const std::string& method, const EditRequest& r) {
  const std::vector<double> tail = schedule_tail(r.sigmas, r.strength);
  if (tail.size() < 2) return {r.x.clone(), {}};
  InversionOptions io;
  io.cfg = r.cfg, io.eta = r.options.number("eta"), io.gen = r.gen;
  return {decode(r.model, invert(method, r.model, tail, r.x, r.source, io), r.target, io), {}};
}
EditResult ddpm_edit(const EditRequest& r) { return inversion_edit("ddpm", r); }
EditResult cycle_edit(const EditRequest& r) { return inversion_edit("cycle", r); }

MethodOption eta_option() {
  return MethodOption{"eta", 1.0, "noise fraction of the decoding steps"}.in(0, 1, true, false);
}

EditMethodRegistrar edit1(EditMethodInfo{"ddpm", "edit-friendly DDPM inversion under the source, its noises decoded "
                                                 "under the target",
                                         "Huberman-Spiegelglas et al. 2024, An Edit Friendly DDPM Noise Space",
                                         ddpm_edit}
                              .strength(0.8)
                              .needs_source()
                              .own_sampler()
                              .option(eta_option()));
EditMethodRegistrar edit2(EditMethodInfo{"cycle", "CycleDiffusion: a DDPM noise chain under the source, decoded "
                                                  "under the target",
                                         "Wu & De la Torre 2023, CycleDiffusion", cycle_edit}
                              .strength(0.8)
                              .needs_source()
                              .own_sampler()
                              .option(eta_option()));

}  // namespace

}  // namespace tweedie
