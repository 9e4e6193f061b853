// Timestep sampling: the distribution of training noise levels (objective.h).
//   uniform             i ~ U{0..T-1}, s = Process::s_at_timestep(i)   (DDPM, Ho et al. 2020)
//   uniform-continuous  t ~ U(t_of(s_min), t_of(s_max)), s = s_of(t)   (score SDE, Song et al. 2021)
//   logit-normal        flow t = sigmoid(u), u ~ N(m, s)              (SD3, Esser et al. 2024, eq. 19)
//                       = log-SNR lambda ~ N(-m, s) in any process
//   log-normal          ln sigma ~ N(P_mean, P_std), sigma = exp(-lambda) (EDM, Karras et al. 2022, Table 1)
// The two normal families act on lambda(s) and map to s with s_of_lambda, so
// a VP, EDM or flow process trains on the same SNR distribution.
// Verified in tests/test_train_data.cpp (TrainDataTimesteps): the uniform
// histogram over the table, its end points, the logit-normal median sigmoid(m)
// and logit moments on flow, the log-normal moments of ln sigma on EDM and
// their flow images, and uniform model time on flow.
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/train/objective.h"

namespace tweedie {

TimestepSampling timestep_sampling_from_string(const std::string& s) {
  if (s == "uniform") return TimestepSampling::Uniform;
  if (s == "uniform-continuous") return TimestepSampling::UniformContinuous;
  if (s == "logit-normal") return TimestepSampling::LogitNormal;
  if (s == "log-normal" || s == "edm") return TimestepSampling::LogNormal;
  fail("unknown timestep sampling '", s, "' (known: uniform, uniform-continuous, logit-normal, log-normal)");
}

std::string to_string(TimestepSampling k) {
  switch (k) {
    case TimestepSampling::Uniform: return "uniform";
    case TimestepSampling::UniformContinuous: return "uniform-continuous";
    case TimestepSampling::LogitNormal: return "logit-normal";
    case TimestepSampling::LogNormal: return "log-normal";
  }
  return "?";
}

torch::Tensor sample_levels(const TimestepSampler& ts, const Process& proc, int64_t n, torch::Generator gen) {
  check(n > 0, "timestep sampling: need n > 0, got ", n);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto out = torch::empty({n}, f64);
  double* s = out.data_ptr<double>();
  switch (ts.kind) {
    case TimestepSampling::Uniform: {
      auto i = torch::randint(0, proc.timesteps(), {n}, gen, torch::TensorOptions().dtype(torch::kInt64));
      const int64_t* ip = i.data_ptr<int64_t>();
      for (int64_t k = 0; k < n; ++k) s[k] = proc.s_at_timestep(double(ip[k]));
      return out;  // table entries: already in range
    }
    case TimestepSampling::UniformContinuous: {
      auto u = torch::rand({n}, gen, f64);
      const double* up = u.data_ptr<double>();
      const double t0 = proc.t_of(proc.s_min()), t1 = proc.t_of(proc.s_max());
      for (int64_t k = 0; k < n; ++k) s[k] = proc.s_of(t0 + (t1 - t0) * up[k]);
      break;
    }
    case TimestepSampling::LogitNormal:
    case TimestepSampling::LogNormal: {
      const bool logit = ts.kind == TimestepSampling::LogitNormal;
      const double m = logit ? ts.logit_mean : ts.p_mean, sd = logit ? ts.logit_std : ts.p_std;
      check(sd > 0, to_string(ts.kind), " timestep sampling: the standard deviation must be > 0, got ", sd);
      auto z = torch::randn({n}, gen, f64);
      const double* zp = z.data_ptr<double>();
      // u = logit(flow t) = ln(VE sigma) = -lambda in both cases.
      for (int64_t k = 0; k < n; ++k) s[k] = proc.s_of_lambda(-(m + sd * zp[k]));
      break;
    }
  }
  if (ts.clamp) out.clamp_(proc.s_min(), proc.s_max());
  return out;
}

}  // namespace tweedie
