// Training objective, batched over per-sample noise levels (objective.h):
// noising x = a(s) x0 + s eps, the network's inputs (x * model_scale * c_in,
// t_of(s)), the target of each parameterization, the weighted per-sample loss
// loss_i = w_i * mean((out_i - target_i)^2), and CFG condition dropout.
//
// Targets: Prediction::target takes one level; it is linear in (x0, eps), so
// at each distinct level its two coefficients are read off a 2-element call
// target(x0 = [1, 0], eps = [0, 1]) = [P, Q] and applied to the whole batch as
// P_i x0_i + Q_i eps_i. Every conversion stays in prediction.cpp.
// Verified in tests/test_train_data.cpp (TrainDataLoss): batched targets equal
// per-sample Prediction::target for every parameterization and process, the
// loss equals its definition, and dropout rates and determinism.
#include <cmath>
#include <map>

#include "tweedie/core/error.h"
#include "tweedie/train/objective.h"

namespace tweedie {

namespace {

std::vector<double> levels(const torch::Tensor& s, int64_t n, const char* what) {
  check(s.dim() == 1 && s.size(0) == n, what, ": need one noise level per sample ([", n, "]), got ", s.sizes());
  auto c = s.to(torch::kCPU, torch::kFloat64).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + n);
}

// [N] values as a [N, 1, 1, ...] tensor broadcasting against `like`.
torch::Tensor per_sample(const std::vector<double>& v, const torch::Tensor& like) {
  std::vector<int64_t> shape(size_t(like.dim()), 1);
  shape[0] = int64_t(v.size());
  return torch::tensor(v, torch::kFloat64).view(shape).to(like.device(), like.scalar_type());
}

}  // namespace

torch::Tensor add_noise(const Process& proc, const torch::Tensor& x0, const torch::Tensor& eps,
                        const torch::Tensor& s) {
  check(x0.sizes() == eps.sizes(), "add_noise: x0 ", x0.sizes(), " and eps ", eps.sizes(), " differ in shape");
  auto sv = levels(s, x0.size(0), "add_noise");
  std::vector<double> a(sv.size());
  for (size_t i = 0; i < sv.size(); ++i) a[i] = proc.a(sv[i]);
  return x0 * per_sample(a, x0) + eps * per_sample(sv, eps);
}

ModelInput model_input(const Process& proc, const Parameterization& p, const torch::Tensor& x,
                       const torch::Tensor& s) {
  auto sv = levels(s, x.size(0), "model_input");
  std::vector<double> scale(sv.size()), t(sv.size());
  for (size_t i = 0; i < sv.size(); ++i) {
    scale[i] = proc.model_scale(sv[i]) * p.c_in(sv[i]);
    t[i] = proc.t_of(sv[i]);
  }
  return {x * per_sample(scale, x), torch::tensor(t, torch::kFloat64).to(x.device(), x.scalar_type())};
}

torch::Tensor training_target(const Parameterization& p, const torch::Tensor& x0, const torch::Tensor& eps,
                              const torch::Tensor& s, const Process& proc) {
  check(x0.sizes() == eps.sizes(), "training target: x0 ", x0.sizes(), " and eps ", eps.sizes(),
        " differ in shape");
  check(p.kind != PredKind::EDM || proc.space() == Space::Plain,
        "EDM preconditioning needs a VP/VE/EDM process, not ", proc.name());
  auto sv = levels(s, x0.size(0), "training target");
  const auto basis_x0 = torch::tensor({1.0, 0.0}, torch::kFloat64), basis_eps = torch::tensor({0.0, 1.0}, torch::kFloat64);
  std::map<double, std::pair<double, double>> cache;
  std::vector<double> P(sv.size()), Q(sv.size());
  for (size_t i = 0; i < sv.size(); ++i) {
    check(sv[i] > 0 && std::isfinite(sv[i]), "training target: noise level ", sv[i], " of sample ", i,
          " must be finite and > 0");
    auto it = cache.find(sv[i]);
    if (it == cache.end()) {
      auto pq = Prediction::target(p, basis_x0, basis_eps, sv[i], proc);
      it = cache.emplace(sv[i], std::make_pair(pq[0].item<double>(), pq[1].item<double>())).first;
    }
    P[i] = it->second.first;
    Q[i] = it->second.second;
  }
  return x0 * per_sample(P, x0) + eps * per_sample(Q, eps);
}

torch::Tensor training_loss(const torch::Tensor& out, const torch::Tensor& x0, const torch::Tensor& eps,
                            const torch::Tensor& s, const Parameterization& p, const Process& proc,
                            const Weighting& w) {
  check(out.sizes() == x0.sizes(), "training loss: network output ", out.sizes(), " and data ", x0.sizes(),
        " differ in shape");
  check(out.dim() >= 2, "training loss: need a batch [N, ...], got ", out.sizes());
  const auto dt = torch::promote_types(out.scalar_type(), torch::kFloat32);
  auto target = training_target(p, x0.to(dt), eps.to(dt), s, proc);
  auto per = (out.to(dt) - target).pow(2).flatten(1).mean(1);
  return per * loss_weights(w, p, s, proc).to(per.device(), dt);
}

torch::Tensor drop_labels(const torch::Tensor& labels, double p, torch::Generator gen) {
  check(p >= 0 && p <= 1, "condition dropout probability must be in [0, 1], got ", p);
  check(labels.dim() == 1, "condition dropout: labels must be [N], got ", labels.sizes());
  auto u = torch::rand({labels.size(0)}, gen, torch::TensorOptions().dtype(torch::kFloat64));
  return labels.masked_fill((u < p).to(labels.device()), -1);
}

}  // namespace tweedie
