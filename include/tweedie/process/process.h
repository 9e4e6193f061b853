// Process: how data is noised.
//
// Every process is written in the *sampling space* used by k-diffusion,
// stable-diffusion.cpp and ComfyUI: a state x and a noise level s ("sigma")
// with
//
//     x = a(s) * x0 + s * eps,
//
// where a(s) = 1 for variance-preserving, variance-exploding and EDM processes
// (x is the VP state divided by alpha_t, s = sigma_t / alpha_t) and
// a(s) = 1 - s for flow matching / rectified flow (x is the flow state itself
// and s is flow time t). Samplers integrate in this space; the process converts
// to the model's own space (x_t = alpha_t * x0 + sigma_t * eps) and model time.
//
// log-SNR lambda(s) = log(a(s) / s) is the same number in both spaces.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

namespace tweedie {

enum class Space { Plain, Flow };  // a(s) = 1, or a(s) = 1 - s

class Process {
 public:
  virtual ~Process() = default;
  virtual std::string name() const = 0;
  virtual Space space() const = 0;

  // Range of noise levels the model was trained on.
  virtual double s_min() const = 0;
  virtual double s_max() const = 0;

  // Model time for a noise level and back: the fractional timestep index
  // (0..N-1) for discrete VP tables, t in [0, 1] for continuous VP and flow,
  // sigma for VE, c_noise = log(sigma)/4 for EDM.
  virtual double t_of(double s) const = 0;
  virtual double s_of(double t) const = 0;

  // Scale from sampling space to the model's own space: x_t = x * scale(s).
  // VP: alpha_t = 1/sqrt(1+s^2); VE, EDM, flow: 1.
  virtual double model_scale(double s) const = 0;

  // Process-space coefficients x_t = alpha_t x0 + sigma_t eps.
  double alpha_t(double s) const { return a(s) * model_scale(s); }
  double sigma_t(double s) const { return s * model_scale(s); }

  // Sampling-space coefficients (depend only on space()).
  double a(double s) const { return space() == Space::Flow ? 1.0 - s : 1.0; }
  double da(double s) const { return space() == Space::Flow ? -1.0 : 0.0; }
  double lambda(double s) const;            // log(a/s); -inf at flow s = 1, +inf at s = 0
  double s_of_lambda(double lambda) const;  // inverse of lambda()
  // The largest noise level a schedule may reach (1 for flow, +inf otherwise).
  double s_limit() const { return space() == Space::Flow ? 1.0 : INFINITY; }

  // Noise data to level s: a(s) x0 + s eps.
  torch::Tensor add_noise(const torch::Tensor& x0, const torch::Tensor& eps, double s) const;
  // Probability-flow ODE velocity dx/ds given the denoised estimate x0_hat:
  // dx/ds = a'(s) x0 + (x - a(s) x0) / s  (= (x - x0)/s for both spaces).
  torch::Tensor ode_derivative(const torch::Tensor& x, const torch::Tensor& x0, double s) const;
  // Shift the log-SNR of a noise level by delta (Simple Diffusion's resolution
  // shift is delta = 2 log(base/res); SD3/Flux's timestep shift is delta = -log(shift)).
  double shift_lambda(double s, double delta) const;

  // Ancestral split of a step s -> s_next with noise amount eta (DDIM's eta;
  // k-diffusion get_ancestral_step): move deterministically to level s_down,
  // then x_next = scale * x_down + noise * z. The split is computed in VE
  // coordinates (sigma = s / a), where eta = 1 is the DDPM posterior, and
  // mapped to this space, so it is marginal-preserving for every process.
  struct Ancestral {
    double s_down, noise, scale;
  };
  Ancestral ancestral_step(double s, double s_next, double eta) const;
  // Forward transition q(x_{s_to} | x_s) from level s up to s_to >= s with
  // standard normal z: x' = (a(s_to)/a(s)) x + sqrt(s_to^2 - (s a(s_to)/a(s))^2) z.
  // The marginal of data noised to s, moved up, is the data noised to s_to
  // (RePaint's and DDNM's time travel; s_to = 1 under flow gives z).
  torch::Tensor noise_up(const torch::Tensor& x, const torch::Tensor& z, double s, double s_to) const;

  // Number of discrete training timesteps (table length for discrete VP,
  // 1000 uniform model times for continuous processes).
  virtual int timesteps() const { return 1000; }
  // Noise level of training timestep i in [0, timesteps()-1]: the table entry
  // for discrete VP; for continuous processes, uniform in model time between
  // t_of(s_min()) and t_of(s_max()).
  double s_at_timestep(double i) const;
};

using ProcessPtr = std::shared_ptr<const Process>;

// Discrete VP training tables (1000 steps unless given).
enum class BetaSchedule { Linear, ScaledLinear, Cosine };
struct VPDiscreteConfig {
  BetaSchedule betas = BetaSchedule::ScaledLinear;
  int steps = 1000;
  double beta_start = 0.00085, beta_end = 0.012;  // linear / scaled_linear
  double cosine_s = 0.008;                        // iDDPM cosine offset
  bool zero_terminal_snr = false;                 // Lin et al. 2023 rescale
};
ProcessPtr make_vp_discrete(const VPDiscreteConfig& c);
// alphas_cumprod of a discrete table, float64, before any zero-terminal-SNR clamp.
std::vector<double> alphas_cumprod(const VPDiscreteConfig& c);

// Continuous VP (score-SDE): linear beta(t) = beta_min + t (beta_max - beta_min),
// or the cosine schedule alpha_bar(t) = cos^2(pi/2 (t+s)/(1+s)) / cos^2(pi/2 s/(1+s)).
enum class VPContinuousKind { Linear, Cosine };
ProcessPtr make_vp_continuous(VPContinuousKind kind = VPContinuousKind::Linear, double beta_min = 0.1,
                              double beta_max = 20.0, double t_eps = 1e-3);
// VE (score-SDE NCSN, model time = sigma) and EDM (Karras et al. 2022, model
// time = log(sigma)/4, preconditioning in Prediction).
ProcessPtr make_ve(double s_min = 0.01, double s_max = 50.0);
ProcessPtr make_edm(double s_min = 0.002, double s_max = 80.0);
// Flow matching / rectified flow: x_t = (1 - t) x0 + t eps, model time t.
ProcessPtr make_flow(double t_min = 1e-3);

// Parse "vp", "vp:linear", "vp:cosine", "vp-cont", "ve", "edm", "flow"; ztsnr
// suffix "+ztsnr" for discrete VP. Throws Error naming the spec.
ProcessPtr make_process(const std::string& spec);
std::vector<std::string> process_names();

}  // namespace tweedie
