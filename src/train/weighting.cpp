// Loss weighting (objective.h). Each weighting is a weight W(SNR) on the
// x0-space squared error |x0_hat - x0|^2, SNR = (alpha_t/sigma_t)^2 = exp(2 lambda):
//   min-SNR-gamma (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR
//                 Weighting Strategy"):      W = min(SNR, gamma)
//   P2            (Choi et al. 2022, "Perception Prioritized Training of Diffusion
//                 Models"), defined on the eps-loss as 1/(k + SNR)^gamma:
//                                            W = SNR / (k + SNR)^gamma
//   EDM           (Karras et al. 2022, eq. 8 / Table 1), on the x0-loss
//                 lambda(sigma) = (sigma^2 + sigma_d^2)/(sigma sigma_d)^2, sigma
//                 the VE sigma exp(-lambda):   W = SNR + 1/sigma_d^2
// A network whose x0 estimate is off by d (same input x) is off by B_p d in
// parameterization p, B_p = d output_p / d x0_hat, so the weight on p's loss
// is w_p = W / B_p^2 and the weighted loss does not depend on p. B_p is read
// from Prediction (Prediction::from_x0(1, x = 0, s).as(p)); e.g. B_eps^2 = SNR
// gives min(SNR, g)/SNR, B_v^2 = SNR + 1 (VP) gives min(SNR, g)/(SNR + 1), and
// B_F^2 = 1/c_out^2 = SNR + 1/sigma_d^2 makes the EDM weight exactly 1 on F.
// Uniform is w_p = 1, the plain loss of each parameterization.
// Verified in tests/test_train_data.cpp (TrainDataWeighting): the closed forms
// above, equal weighted losses across eps/x0/v/velocity/score/F for one
// x0-space error on VP, EDM and flow, and the unit EDM weight on F.
#include <algorithm>
#include <cmath>
#include <map>

#include "tweedie/core/error.h"
#include "tweedie/train/objective.h"

namespace tweedie {

namespace {

constexpr double kLambdaClamp = 20.0;

// The level at which weights are evaluated: log-SNR clamped to [-20, 20].
double weight_level(double s, const Process& proc) {
  const double l = proc.lambda(s);
  if (l > kLambdaClamp || l < -kLambdaClamp || std::isnan(l))
    return proc.s_of_lambda(std::clamp(std::isnan(l) ? 0.0 : l, -kLambdaClamp, kLambdaClamp));
  return s;
}

double W(const Weighting& w, const Parameterization& p, double snr) {
  switch (w.kind) {
    case WeightingKind::MinSNR: return std::min(snr, w.gamma);
    case WeightingKind::P2: return snr / std::pow(w.p2_k + snr, w.p2_gamma);
    case WeightingKind::EDM: return snr + 1.0 / (p.sigma_data * p.sigma_data);
    case WeightingKind::Uniform: break;
  }
  return 1.0;
}

void validate(const Weighting& w, const Parameterization& p) {
  if (w.kind == WeightingKind::MinSNR) check(w.gamma > 0, "min-snr weighting: gamma must be > 0, got ", w.gamma);
  if (w.kind == WeightingKind::P2) {
    check(w.p2_k > 0, "p2 weighting: k must be > 0, got ", w.p2_k);
    check(w.p2_gamma >= 0, "p2 weighting: gamma must be >= 0, got ", w.p2_gamma);
  }
  if (w.kind == WeightingKind::EDM)
    check(p.sigma_data > 0, "edm weighting: sigma_data must be > 0, got ", p.sigma_data);
}

}  // namespace

WeightingKind weighting_from_string(const std::string& s) {
  if (s == "uniform" || s == "none") return WeightingKind::Uniform;
  if (s == "min-snr" || s == "min_snr") return WeightingKind::MinSNR;
  if (s == "p2") return WeightingKind::P2;
  if (s == "edm") return WeightingKind::EDM;
  fail("unknown loss weighting '", s, "' (known: uniform, min-snr, p2, edm)");
}

std::string to_string(WeightingKind k) {
  switch (k) {
    case WeightingKind::Uniform: return "uniform";
    case WeightingKind::MinSNR: return "min-snr";
    case WeightingKind::P2: return "p2";
    case WeightingKind::EDM: return "edm";
  }
  return "?";
}

torch::Tensor snr(const Process& proc, const torch::Tensor& s) {
  auto c = s.to(torch::kCPU, torch::kFloat64).contiguous();
  auto out = torch::empty_like(c);
  for (int64_t i = 0; i < c.numel(); ++i) out.data_ptr<double>()[i] = std::exp(2 * proc.lambda(c.data_ptr<double>()[i]));
  return out;
}

double x0_error_scale(const Parameterization& p, double s, const Process& proc) {
  check(s > 0 && std::isfinite(s), "noise level must be finite and > 0, got ", s);
  check(p.kind != PredKind::EDM || proc.space() == Space::Plain,
        "EDM preconditioning needs a VP/VE/EDM process, not ", proc.name());
  const auto one = torch::ones({1}, torch::kFloat64), zero = torch::zeros({1}, torch::kFloat64);
  const double b = Prediction::from_x0(one, zero, s, proc).as(p).item<double>();
  return b * b;
}

double x0_space_weight(const Weighting& w, const Parameterization& p, double s, const Process& proc) {
  validate(w, p);
  const double sw = weight_level(s, proc);
  if (w.kind == WeightingKind::Uniform) return x0_error_scale(p, sw, proc);
  return W(w, p, std::exp(2 * proc.lambda(sw)));
}

torch::Tensor loss_weights(const Weighting& w, const Parameterization& p, const torch::Tensor& s,
                           const Process& proc) {
  validate(w, p);
  check(s.dim() == 1, "loss weights: need levels [N], got ", s.sizes());
  auto c = s.to(torch::kCPU, torch::kFloat64).contiguous();
  auto out = torch::ones_like(c);
  if (w.kind == WeightingKind::Uniform) return out;
  std::map<double, double> cache;
  const double* sp = c.data_ptr<double>();
  double* op = out.data_ptr<double>();
  for (int64_t i = 0; i < c.numel(); ++i) {
    auto it = cache.find(sp[i]);
    if (it == cache.end()) {
      const double sw = weight_level(sp[i], proc);
      it = cache.emplace(sp[i], W(w, p, std::exp(2 * proc.lambda(sw))) / x0_error_scale(p, sw, proc)).first;
    }
    op[i] = it->second;
  }
  return out;
}

}  // namespace tweedie
