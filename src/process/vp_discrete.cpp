// Discrete variance-preserving process (DDPM, Ho et al. 2020) with the
// training tables in use: linear (1e-4..0.02), scaled_linear (Stable
// Diffusion: betas = linspace(sqrt(0.00085), sqrt(0.012))^2), cosine
// (Nichol & Dhariwal 2021, s = 0.008, betas clipped at 0.999), and the
// zero-terminal-SNR rescale of Lin et al. 2024 ("Common Diffusion Noise
// Schedules and Sample Steps are Flawed", Algorithm 1).
//
// Noise level of timestep i: s_i = sqrt((1 - abar_i) / abar_i). Model time of
// an arbitrary s is the fractional index found by linear interpolation of
// log s over the table (k-diffusion's DiscreteSchedule). Under zero terminal
// SNR abar_{N-1} = 0 would put s at infinity; like ComfyUI we store
// abar_{N-1} = 4.8973451890853435e-08 (s ~ 4518) so samplers stay finite.
#include <cmath>

#include "tweedie/core/error.h"
#include "tweedie/process/process.h"

namespace tweedie {

std::vector<double> alphas_cumprod(const VPDiscreteConfig& c) {
  check(c.steps >= 2, "VP table: steps must be >= 2, got ", c.steps);
  const int n = c.steps;
  std::vector<double> betas(n);
  switch (c.betas) {
    case BetaSchedule::Linear:
      for (int i = 0; i < n; ++i) betas[i] = c.beta_start + (c.beta_end - c.beta_start) * i / (n - 1);
      break;
    case BetaSchedule::ScaledLinear: {
      double a = std::sqrt(c.beta_start), b = std::sqrt(c.beta_end);
      for (int i = 0; i < n; ++i) {
        double r = a + (b - a) * i / (n - 1);
        betas[i] = r * r;
      }
      break;
    }
    case BetaSchedule::Cosine: {
      auto f = [&](double t) {
        double v = std::cos((t / n + c.cosine_s) / (1 + c.cosine_s) * M_PI / 2);
        return v * v;
      };
      for (int i = 0; i < n; ++i) betas[i] = std::min(1 - f(i + 1) / f(i), 0.999);
      break;
    }
  }
  std::vector<double> abar(n);
  double prod = 1;
  for (int i = 0; i < n; ++i) abar[i] = prod *= (1 - betas[i]);
  if (c.zero_terminal_snr) {
    // Shift sqrt(abar) so the last is 0, scale so the first is unchanged.
    double first = std::sqrt(abar[0]), last = std::sqrt(abar[n - 1]);
    for (int i = 0; i < n; ++i) {
      double r = (std::sqrt(abar[i]) - last) * first / (first - last);
      abar[i] = r * r;
    }
  }
  return abar;
}

namespace {

class VPDiscrete : public Process {
 public:
  explicit VPDiscrete(const VPDiscreteConfig& c) : cfg_(c) {
    auto abar = alphas_cumprod(c);
    if (c.zero_terminal_snr) abar.back() = 4.8973451890853435e-08;
    for (double ab : abar) log_s_.push_back(0.5 * std::log((1 - ab) / ab));
    for (size_t i = 1; i < log_s_.size(); ++i)
      check(log_s_[i] > log_s_[i - 1], "VP table: noise levels must increase with timestep (at ", i, ")");
  }
  std::string name() const override {
    std::string n = cfg_.betas == BetaSchedule::Linear ? "vp:linear"
                    : cfg_.betas == BetaSchedule::Cosine ? "vp:cosine" : "vp";
    return cfg_.zero_terminal_snr ? n + "+ztsnr" : n;
  }
  Space space() const override { return Space::Plain; }
  double s_min() const override { return std::exp(log_s_.front()); }
  double s_max() const override { return std::exp(log_s_.back()); }
  double t_of(double s) const override {
    double ls = std::log(s);
    if (ls <= log_s_.front()) return 0;
    if (ls >= log_s_.back()) return log_s_.size() - 1;
    size_t hi = std::upper_bound(log_s_.begin(), log_s_.end(), ls) - log_s_.begin();
    size_t lo = hi - 1;
    return lo + (ls - log_s_[lo]) / (log_s_[hi] - log_s_[lo]);
  }
  double s_of(double t) const override {
    double tc = std::clamp(t, 0.0, double(log_s_.size() - 1));
    size_t lo = std::min(size_t(tc), log_s_.size() - 2);
    double w = tc - lo;
    return std::exp((1 - w) * log_s_[lo] + w * log_s_[lo + 1]);
  }
  double model_scale(double s) const override { return 1.0 / std::sqrt(1.0 + s * s); }
  int timesteps() const override { return cfg_.steps; }

 private:
  VPDiscreteConfig cfg_;
  std::vector<double> log_s_;
};

}  // namespace

ProcessPtr make_vp_discrete(const VPDiscreteConfig& c) { return std::make_shared<VPDiscrete>(c); }

}  // namespace tweedie
