// Inverse-problem solvers: samplers over a Denoiser and an Operator.
//
// Given a measurement y = A x0 + sigma_y n (operator.h), a solver runs the
// reverse process from the start state x (sampling space, at
// run.sigmas[0]; usually sigmas[0] * standard normal noise, as for the
// samplers) down to level 0 and returns a restoration consistent with y.
// Solvers are functions over (SamplerRun&, Measurement, x) like the samplers
// (sampler.h): one Denoiser call per NFE through run.denoise, every random
// draw from run.gen, run.callback after each step (its index is the step of
// run.sigmas, which DDNM+'s time travel visits more than once). Each lives in
// its own file (src/restore/ddnm.cpp, ddrm.cpp, pigdm.cpp, dps.cpp). PiGDM and
// DPS differentiate through the denoiser: they switch autograd on for that
// call themselves, so the Denoiser must be differentiable (networks and the
// Gaussian mixture are).
#pragma once
#include <string>
#include <vector>

#include "tweedie/restore/operator.h"
#include "tweedie/sample/sampler.h"

namespace tweedie {

struct Measurement {
  OperatorPtr op;
  torch::Tensor y;      // [N, op->out_shape()...]
  double sigma_y = 0;   // standard deviation of the measurement noise
};

struct RestoreOptions {
  double eta = -1;         // fresh-noise fraction of each step (DDNM/DDRM eta); < 0: the solver's default
  double eta_b = 1.0;      // DDRM eta_b: weight of y on coordinates measured with less noise than the state
  int travel_length = 5;   // DDNM+ time travel: jump back L steps ...
  int travel_repeat = 2;   // ... r - 1 times at every L-th step (1 = no time travel)
  double zeta = 1.0;       // DPS step size zeta' (the step is zeta' / |y - A x0|)
  double eta_or(double dflt) const { return eta >= 0 ? eta : dflt; }
};

using RestoreFn = torch::Tensor (*)(SamplerRun& run, const Measurement& m, torch::Tensor x, const RestoreOptions& o);

struct RestoreSolverInfo {
  std::string name;         // ddnm, ddnm+, ddrm, ...
  std::string description;  // one line
  std::string reference;    // paper
  RestoreFn fn;
  bool needs_svd = false;   // rejects operators without a known SVD
  bool time_travel = false; // takes travel_length / travel_repeat
  bool uses_eta_b = false;  // takes eta_b
  bool uses_zeta = false;   // takes zeta
};

const std::vector<RestoreSolverInfo>& restore_solvers();
const RestoreSolverInfo& find_restore_solver(const std::string& name);  // Error listing the known names

struct RestoreSolverRegistrar {
  explicit RestoreSolverRegistrar(RestoreSolverInfo info);
};

// Validate (decreasing levels ending in 0, shapes of x and y against the
// operator, sigma_y >= 0, options in range, an SVD where needed, a generator)
// and run the solver.
torch::Tensor run_restore(const RestoreSolverInfo& info, SamplerRun& run, const Measurement& m, torch::Tensor x,
                          const RestoreOptions& o = {});

// Denoiser evaluations of one run with `steps` steps and options o.
int restore_nfe(const RestoreSolverInfo& info, int steps, const RestoreOptions& o);

// RePaint's time-travel schedule (Lugmayr et al. 2022, get_schedule_jump) as
// indices into a schedule of steps + 1 levels: from 0 to `steps` in unit
// moves, and at every L-th step from the bottom (levels steps-1, steps-1-L,
// ... while above L) back up L levels, r - 1 times. length = repeat = 1 (or
// repeat = 1) is the plain path 0, 1, ..., steps.
std::vector<int> time_travel_path(int steps, int length, int repeat);

}  // namespace tweedie
