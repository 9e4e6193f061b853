// Inverse-problem solvers: samplers over a Denoiser and an Operator.
//
// Given a measurement y = A x0 + sigma_y n (operator.h), a solver runs the
// reverse process from the start state x (sampling space, at
// run.sigmas[0]; usually sigmas[0] * standard normal noise, as for the
// samplers) down to level 0 and returns a restoration consistent with y.
// Solvers are functions over (SamplerRun&, Measurement, x) like the samplers
// (sampler.h): one Denoiser call per NFE through run.denoise, every random
// draw from run.gen, run.callback after each step (its index is the step of
// run.sigmas, which DDNM+'s and RePaint's time travel visit more than once).
// Each lives in its own file (src/restore/ddnm.cpp, ddrm.cpp, pigdm.cpp,
// dps.cpp, mcg.cpp, repaint.cpp, blended.cpp, psld.cpp, resample.cpp). PiGDM, DPS and MCG
// differentiate through the denoiser: they switch autograd on for that call
// themselves, so the Denoiser must be differentiable (networks and the
// Gaussian mixture are). RePaint and Blended Diffusion take mask operators only.
//
// Baselines without a denoiser are registered alongside (baseline = true, no
// NFE; they ignore the start state): pinv (A^+ y) and bicubic (bicubic
// upsampling of y, super-resolution operators only) in baselines.cpp, tikhonov
// in tikhonov.cpp.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "tweedie/core/method_options.h"
#include "tweedie/core/registry.h"
#include "tweedie/restore/operator.h"
#include "tweedie/sample/sampler.h"

namespace tweedie {

struct Measurement {
  OperatorPtr op;
  torch::Tensor y;      // [N, op->out_shape()...]
  double sigma_y = 0;   // standard deviation of the measurement noise
  // Latent models: the operator acts on decode(x0), the pixels of a state's
  // estimate (differentiable: autograd flows through it); encode maps pixels
  // back (PSLD's gluing term). Empty: the operator acts on the sampling space.
  std::function<torch::Tensor(const torch::Tensor&)> decode, encode;
  // A applied to an estimate of the sampling space: A x0, or A decode(x0).
  torch::Tensor measure(const torch::Tensor& x0) const { return op->A(decode ? decode(x0) : x0); }
};

// A solver's own options by name (--eta, --zeta, --travel-length, ...): each
// solver declares the ones it takes, with default, help and range, in its
// registration (RestoreSolverInfo::option); run_restore checks the given ones
// against them ("ddrm: --zeta does not apply", "ddrm: --eta-b must be in
// [0, 1] (got 2)") and hands the solver their values.
using RestoreOptions = OptionValues;

using RestoreFn = torch::Tensor (*)(SamplerRun& run, const Measurement& m, torch::Tensor x, const MethodValues& o);

// Options several solvers declare, with the solver's default.
MethodOption restore_eta_option(double dflt);  // "eta": fresh-noise fraction of each step, in [0, 1]
MethodOption restore_zeta_option();            // "zeta": step size zeta' of the measurement gradient (1)
std::vector<MethodOption> time_travel_options();  // "travel-length" L (5), "travel-repeat" r (2; 1 = none)

struct RestoreSolverInfo {
  std::string name;         // ddnm, ddnm+, ddrm, ...
  std::string description;  // one line
  std::string reference;    // paper
  RestoreFn fn;
  bool needs_svd = false;   // rejects operators without a known SVD
  bool masks_only = false;  // rejects operators that are not pixel masks (Operator::is_mask)
  bool baseline = false;    // no denoiser: no steps, no NFE, the start state is ignored
  bool decoder = false;     // works on latent models: the operator acts through Measurement::decode
  bool needs_decoder = false;  // latent models only (PSLD, ReSample)
  std::vector<MethodOption> options = {};  // its own options

  // Registrations name what they set: RestoreSolverInfo{...}.requires_svd().option(restore_eta_option(0.85)).
  RestoreSolverInfo& requires_svd() { needs_svd = true; return *this; }
  RestoreSolverInfo& for_masks_only() { masks_only = true; return *this; }
  RestoreSolverInfo& as_baseline() { baseline = true; return *this; }
  RestoreSolverInfo& option(MethodOption o) { options.push_back(std::move(o)); return *this; }
  RestoreSolverInfo& options_of(const std::vector<MethodOption>& os) {
    options.insert(options.end(), os.begin(), os.end());
    return *this;
  }
  bool declares(const std::string& option) const;
  bool time_travel() const { return declares("travel-length"); }  // DDNM+, RePaint
  bool uses_sampler() const { return declares("sampler"); }       // Blended Diffusion
  // The given values checked against its options (errors begin "<name>: ").
  MethodValues values(const RestoreOptions& o) const { return o.values_for(options, name); }
  RestoreSolverInfo& through_decoder() { decoder = true; return *this; }
  RestoreSolverInfo& latent_only() { decoder = needs_decoder = true; return *this; }
};

template <>
Registry<RestoreSolverInfo>& registry<RestoreSolverInfo>();
using RestoreSolverRegistrar = Registrar<RestoreSolverInfo>;
inline const std::vector<RestoreSolverInfo>& restore_solvers() { return registry<RestoreSolverInfo>().all(); }
// Error listing the known names.
inline const RestoreSolverInfo& find_restore_solver(const std::string& name) {
  return registry<RestoreSolverInfo>().find(name);
}

// Validate (decreasing levels ending in 0, shapes of x and y against the
// operator, sigma_y >= 0, options in range, an SVD where needed, a generator)
// and run the solver.
torch::Tensor run_restore(const RestoreSolverInfo& info, SamplerRun& run, const Measurement& m, torch::Tensor x,
                          const RestoreOptions& o = {});

// Denoiser evaluations of one run with `steps` steps and options o.
int restore_nfe(const RestoreSolverInfo& info, int steps, const RestoreOptions& o);

// ---- building blocks shared by the solvers (solver.cpp, dps.cpp) ----------

// The measurement noised to level s, y_s = a(s) y + s A z (z ~ N(0, I) shaped
// like x, from run.gen; no draw at s = 0, where y_s = y), and the state
// projected onto {x' : A x' = y_s}: x + A^+ (y_s - A x). For a mask this keeps
// x where a pixel is missing and puts y_s where it is observed: RePaint's and
// Blended Diffusion's known region, MCG's projection (Process::add_noise).
torch::Tensor project_to_noised_measurement(SamplerRun& run, const Measurement& m, const torch::Tensor& x, double s);

// One DPS step (dps.cpp) from run.sigmas[i] to run.sigmas[i + 1]: the
// ancestral step with noise eta on the denoiser's x0, then the gradient step
// -zeta' grad_x |y - A x0(x)|. Returns the new state and that x0.
// `extra`, if given, adds a loss of x0 to the residual before the gradient
// is taken (PSLD's gluing term). Latent measurements residual through decode.
struct GuidedStep {
  torch::Tensor x, x0;
};
using LossFn = std::function<torch::Tensor(const torch::Tensor& x0)>;
GuidedStep dps_step(SamplerRun& run, const Measurement& m, const torch::Tensor& x, int i, double eta, double zeta,
                    const char* who, const LossFn& extra = {});
// ReSample's pieces (resample.cpp): argmin_z |y - A decode(z)|^2 from z_init
// by AdamW (at most `steps` iterations, learning rate lr, stopping below
// max(sigma_y^2, 1e-6) mean squared residual), and the stochastic
// resampling of the state z_next at level sn around z0 (v = gamma x the
// DDPM posterior variance of the step s -> sn, in the state's units):
// N((v a(sn) z0 + sn^2 z_next) / (v + sn^2), (1/v + 1/sn^2)^-1 I), noise from run.gen.
torch::Tensor hard_data_consistency(const Measurement& m, const torch::Tensor& z_init, int steps, double lr);
torch::Tensor stochastic_resample(SamplerRun& run, const torch::Tensor& z0, const torch::Tensor& z_next, double s,
                                  double sn, double gamma);

// Tikhonov regularisation (tikhonov.cpp): x = (A^T A + lambda I)^-1 A^T y =
// V diag(s / (s^2 + lambda)) U^T y (singular values <= cutoff dropped), per
// sample lambda [N] (0 gives A^+ y). tikhonov_lambda chooses lambda by
// Morozov's discrepancy principle: |A x - y|^2 = sigma_y^2 n, n the number of
// measured coordinates (singular values > 0), by bisection on log lambda; 0
// when sigma_y = 0 (or when even lambda = 0 leaves a larger residual), and a
// huge lambda (x ~ 0) when |y|^2 is already below the target.
torch::Tensor tikhonov(const Operator& op, const torch::Tensor& y, const torch::Tensor& lambda);
torch::Tensor tikhonov_lambda(const Operator& op, const torch::Tensor& y, double sigma_y);

// RePaint's time-travel schedule (Lugmayr et al. 2022, get_schedule_jump) as
// indices into a schedule of steps + 1 levels: from 0 to `steps` in unit
// moves, and at every L-th step from the bottom (levels steps-1, steps-1-L,
// ... while above L) back up L levels, r - 1 times. length = repeat = 1 (or
// repeat = 1) is the plain path 0, 1, ..., steps.
std::vector<int> time_travel_path(int steps, int length, int repeat);

}  // namespace tweedie
