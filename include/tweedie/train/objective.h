// Training objective: which noise levels to train on (timestep sampling), what
// the network should output there (the Prediction target), how each level is
// weighted, the per-sample loss, and condition dropout for classifier-free
// guidance. Batched over per-sample noise levels s [N] in the sampling space of
// process.h (x = a(s) x0 + s eps).
//
// Files: timestep_sampling.cpp, objective.cpp (noising, targets, loss,
// condition dropout), weighting.cpp. The eps/x0/v/velocity/score/F algebra is
// Prediction's (prediction.h); nothing here re-derives it.
//
// Verified in tests/test_train_data.cpp: TrainDataTimesteps (histograms and
// quantiles of every sampler), TrainDataWeighting (closed forms, and equality
// of the weighted loss across parameterizations for one x0-space error),
// TrainDataLoss (batched targets against Prediction::target, condition dropout).
#pragma once
#include <string>

#include <torch/types.h>

#include "tweedie/process/prediction.h"
#include "tweedie/process/process.h"

namespace tweedie {

// ---- timestep sampling (timestep_sampling.cpp) ------------------------------
enum class TimestepSampling {
  Uniform,            // i ~ U{0, ..., timesteps()-1}, s = s_at_timestep(i) (DDPM, Ho et al. 2020)
  UniformContinuous,  // model time t ~ U(t_of(s_min), t_of(s_max)), s = s_of(t)
  LogitNormal,        // SD3 (Esser et al. 2024): flow t = sigmoid(u), u ~ N(mean, std)
  LogNormal,          // EDM (Karras et al. 2022): ln sigma ~ N(P_mean, P_std)
};
TimestepSampling timestep_sampling_from_string(const std::string& s);  // uniform, uniform-continuous, logit-normal, log-normal (or edm)
std::string to_string(TimestepSampling k);

struct TimestepSampler {
  TimestepSampling kind = TimestepSampling::Uniform;
  double logit_mean = 0.0, logit_std = 1.0;  // LogitNormal (SD3 default m = 0, s = 1)
  double p_mean = -1.2, p_std = 1.2;         // LogNormal (EDM defaults)
  // Clamp levels to the process's trained range [s_min, s_max] (LogitNormal and
  // LogNormal can leave it; a discrete table cannot be evaluated outside it).
  bool clamp = true;
};

// n noise levels s, float64 [n] on the CPU, drawn from gen.
//
// LogitNormal and LogNormal are distributions of log-SNR, carried to every
// process through lambda(s) (process.h), so a process trains on the same SNRs
// whatever its space:
//   LogitNormal: flow t = sigmoid(u) has lambda = log((1-t)/t) = -u, so
//                lambda ~ N(-mean, std); for VP/VE/EDM s = exp(u) (log-normal s).
//   LogNormal:   VE sigma = exp(-lambda), so lambda ~ N(-P_mean, P_std); for
//                flow s = sigma / (1 + sigma).
torch::Tensor sample_levels(const TimestepSampler& ts, const Process& proc, int64_t n, torch::Generator gen);

// ---- noising, targets and model inputs (objective.cpp) ----------------------
// Per-sample x = a(s_i) x0_i + s_i eps_i (Process::add_noise for each level).
torch::Tensor add_noise(const Process& proc, const torch::Tensor& x0, const torch::Tensor& eps, const torch::Tensor& s);
// What the network sees for state x at levels s, as NetDenoiser::predict feeds
// it: input x * model_scale(s) * c_in(s) and model time t_of(s) [N] (x's dtype).
struct ModelInput {
  torch::Tensor x, t;
};
ModelInput model_input(const Process& proc, const Parameterization& p, const torch::Tensor& x, const torch::Tensor& s);
// Per-sample training target in parameterization p: Prediction::target at each
// level. Targets are linear in (x0, eps), target_i = P(s_i) x0_i + Q(s_i) eps_i;
// (P, Q) are read off Prediction::target itself (once per distinct level) and
// applied batched, so no conversion is written outside prediction.cpp.
torch::Tensor training_target(const Parameterization& p, const torch::Tensor& x0, const torch::Tensor& eps,
                              const torch::Tensor& s, const Process& proc);

// ---- loss weighting (weighting.cpp) -----------------------------------------
// SNR = (alpha_t / sigma_t)^2 = exp(2 lambda(s)). A network output that is off
// by d in x0 space (x0_hat = x0 + d at the same state x) is off by B_p(s) d in
// parameterization p, where B_p = d(output_p)/d(x0_hat) at fixed x:
//   x0: 1   eps: -a/s (B^2 = SNR)   v: -(alpha_t^2 + sigma_t^2)/sigma_t (VP: B^2 = SNR + 1)
//   velocity: -(a + s)/s   score: a/(s sigma_t)   edm (F): 1/c_out
// (B_p is read from Prediction, not hard-coded). Each weighting is a weight
// W(SNR) on the x0-space squared error; on parameterization p's loss it is
// w_p = W / B_p^2, so the weighted loss is the same for every parameterization.
//   Uniform  w_p = 1: the plain loss of p (its x0-space weight is B_p^2).
//   MinSNR   (Hang et al. 2023) W = min(SNR, gamma): eps min(SNR,g)/SNR,
//            v (VP) min(SNR,g)/(SNR+1), x0 min(SNR,g).
//   P2       (Choi et al. 2022) on the eps-loss w_eps = 1/(k + SNR)^gamma,
//            i.e. W = SNR/(k + SNR)^gamma.
//   EDM      (Karras et al. 2022) on the x0-loss lambda(sigma) =
//            (sigma^2 + sigma_data^2)/(sigma sigma_data)^2 with sigma = VE
//            sigma = exp(-lambda), i.e. W = SNR + 1/sigma_data^2 = 1/c_out^2:
//            exactly 1 on the F-loss of EDM preconditioning. sigma_data is the
//            Parameterization's.
// Weights are evaluated at log-SNR clamped to [-20, 20], so they stay finite
// at the ends (flow t = 1 with eps or score prediction, where B_p = 0).
enum class WeightingKind { Uniform, MinSNR, P2, EDM };
WeightingKind weighting_from_string(const std::string& s);  // uniform, min-snr, p2, edm
std::string to_string(WeightingKind k);

struct Weighting {
  WeightingKind kind = WeightingKind::Uniform;
  double gamma = 5.0;                  // MinSNR (paper's default)
  double p2_k = 1.0, p2_gamma = 1.0;   // P2
};

// SNR of each level, float64 [N].
torch::Tensor snr(const Process& proc, const torch::Tensor& s);
// B_p(s)^2: the squared-error scale from x0 space to p's space at level s.
double x0_error_scale(const Parameterization& p, double s, const Process& proc);
// The x0-space weight W(SNR) (Uniform: B_p^2, as the plain p-loss implies).
double x0_space_weight(const Weighting& w, const Parameterization& p, double s, const Process& proc);
// Per-sample weights w_p on p's loss, float64 [N] on the CPU.
torch::Tensor loss_weights(const Weighting& w, const Parameterization& p, const torch::Tensor& s, const Process& proc);

// ---- the loss (objective.cpp) -----------------------------------------------
// loss_i = w_i * mean over sample i's elements of (out_i - target_i)^2, [N],
// computed in float32 (or out's dtype if wider); gradients flow through out.
torch::Tensor training_loss(const torch::Tensor& out, const torch::Tensor& x0, const torch::Tensor& eps,
                            const torch::Tensor& s, const Parameterization& p, const Process& proc,
                            const Weighting& w);

// Condition dropout for classifier-free guidance (Ho & Salimans 2022): each
// label is replaced by -1 (the null class) with probability p, one uniform per
// label drawn from gen.
torch::Tensor drop_labels(const torch::Tensor& labels, double p, torch::Generator gen);

}  // namespace tweedie
