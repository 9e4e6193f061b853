// Exact Gaussian-mixture denoiser (see gmm.h for the formula). Verified in
// tests against Monte-Carlo estimates of E[x0 | x] and used as the exact
// reference for every sampler.
#include "tweedie/models/gmm.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"

namespace tweedie {

using json = nlohmann::json;
namespace {

torch::Tensor f64(const std::vector<double>& v) {
  return torch::tensor(v, torch::kFloat64);
}

std::vector<double> numbers(const json& j, const std::string& what, const std::string& path) {
  if (!j.is_array()) fail(path, ": '", what, "' must be an array of numbers");
  std::vector<double> out;
  for (auto& e : j) {
    if (!e.is_number()) fail(path, ": '", what, "' must contain only numbers");
    double d = e.get<double>();
    if (!std::isfinite(d)) fail(path, ": '", what, "' contains a non-finite value");
    out.push_back(d);
  }
  return out;
}

}  // namespace

int64_t GaussianMixture::num_classes() const {
  int64_t m = 0;
  for (auto c : classes) m = std::max(m, c + 1);
  return m;
}

GaussianMixture GaussianMixture::load(const std::string& path) {
  std::string text = read_file(path);
  json j;
  try {
    j = json::parse(text);
  } catch (const std::exception& e) {
    fail(path, ": malformed JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail(path, ": expected a JSON object with shape, weights, means, variances");
  for (auto& [k, v] : j.items())
    if (k != "shape" && k != "weights" && k != "means" && k != "variances" && k != "classes")
      fail(path, ": unknown key '", k, "' (known: shape, weights, means, variances, classes)");
  for (const char* k : {"shape", "weights", "means", "variances"})
    if (!j.contains(k)) fail(path, ": missing key '", k, "'");
  GaussianMixture m;
  int64_t D = 1;
  for (double d : numbers(j["shape"], "shape", path)) {
    if (d < 1 || d != std::floor(d)) fail(path, ": 'shape' entries must be positive integers");
    m.shape.push_back(static_cast<int64_t>(d));
    D *= m.shape.back();
  }
  if (m.shape.empty()) fail(path, ": 'shape' is empty");
  auto w = numbers(j["weights"], "weights", path);
  const int64_t K = w.size();
  if (K == 0) fail(path, ": 'weights' is empty");
  double wsum = 0;
  for (double x : w) {
    if (x < 0) fail(path, ": 'weights' must be non-negative");
    wsum += x;
  }
  if (!(wsum > 0)) fail(path, ": 'weights' sum to zero");
  auto rows = [&](const char* key, bool positive) {
    const json& a = j[key];
    if (!a.is_array() || (int64_t)a.size() != K)
      fail(path, ": '", key, "' must have one row per weight (", K, " rows)");
    std::vector<double> flat;
    for (size_t k = 0; k < a.size(); ++k) {
      auto r = numbers(a[k], std::string(key) + "[" + std::to_string(k) + "]", path);
      if ((int64_t)r.size() != D)
        fail(path, ": '", key, "[", k, "]' has ", r.size(), " values, shape needs ", D);
      for (double x : r)
        if (positive && !(x > 0)) fail(path, ": '", key, "[", k, "]' must be positive");
      flat.insert(flat.end(), r.begin(), r.end());
    }
    return f64(flat).reshape({K, D});
  };
  m.weights = f64(w) / wsum;
  m.means = rows("means", false);
  m.variances = rows("variances", true);
  if (j.contains("classes")) {
    auto c = numbers(j["classes"], "classes", path);
    if ((int64_t)c.size() != K) fail(path, ": 'classes' must have one entry per weight (", K, ")");
    for (double x : c) {
      if (x < 0 || x != std::floor(x)) fail(path, ": 'classes' entries must be non-negative integers");
      m.classes.push_back(static_cast<int64_t>(x));
    }
  }
  return m;
}

void GaussianMixture::save(const std::string& path) const {
  json j;
  j["shape"] = shape;
  auto vec = [](const torch::Tensor& t) {
    auto c = t.contiguous().to(torch::kFloat64);
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  };
  j["weights"] = vec(weights);
  j["means"] = json::array();
  j["variances"] = json::array();
  for (int64_t k = 0; k < components(); ++k) {
    j["means"].push_back(vec(means[k]));
    j["variances"].push_back(vec(variances[k]));
  }
  if (!classes.empty()) j["classes"] = classes;
  write_file_atomic(path, j.dump() + "\n");
}

namespace {
// log prior weight per (sample, component), -inf where the component is not in
// the sample's class. labels: [N] int64 or undefined.
torch::Tensor log_weights(const GaussianMixture& m, const torch::Tensor& labels, int64_t N) {
  auto lw = m.weights.log().unsqueeze(0).expand({N, m.components()}).clone();
  if (!labels.defined()) return lw;
  check(labels.dim() == 1 && labels.size(0) == N, "gmm: labels must be [N] with N = batch size");
  if (m.classes.empty()) {
    check((labels < 0).all().item<bool>(), "gmm: this mixture has no classes, but labels were given");
    return lw;
  }
  auto cls = torch::tensor(m.classes, torch::kInt64).unsqueeze(0);  // [1, K]
  auto lab = labels.to(torch::kInt64).cpu().unsqueeze(1);            // [N, 1]
  check((lab < m.num_classes()).all().item<bool>(), "gmm: label out of range (mixture has ", m.num_classes(),
        " classes)");
  auto keep = (lab < 0) | (lab == cls);
  return lw.masked_fill(keep.logical_not(), -INFINITY);
}

// Per-component Gaussian log-likelihood of x [N, D] under N(a mu, a^2 v + s^2): [N, K]
torch::Tensor component_loglik(const GaussianMixture& m, const torch::Tensor& x, double a, double s) {
  auto var = m.variances * (a * a) + s * s;                        // [K, D]
  auto diff = x.unsqueeze(1) - m.means.unsqueeze(0) * a;           // [N, K, D]
  return -0.5 * ((diff * diff / var.unsqueeze(0)).sum(-1) + (var.log() + std::log(2 * M_PI)).sum(-1).unsqueeze(0));
}
}  // namespace

torch::Tensor GaussianMixture::posterior_mean(const torch::Tensor& x, double s, const Process& p,
                                              const torch::Tensor& labels) const {
  const int64_t N = x.size(0);
  check(x.numel() == N * dim(), "gmm: input has ", x.numel() / std::max<int64_t>(N, 1),
        " values per sample, the mixture has ", dim());
  auto xf = x.reshape({N, dim()}).to(torch::kFloat64).cpu();
  const double a = p.a(s);
  auto logits = component_loglik(*this, xf, a, s) + log_weights(*this, labels, N);
  auto r = torch::softmax(logits, 1);                                         // [N, K]
  auto gain = variances * a / (variances * (a * a) + s * s);                 // [K, D]
  auto ek = means.unsqueeze(0) + gain.unsqueeze(0) * (xf.unsqueeze(1) - means.unsqueeze(0) * a);  // [N, K, D]
  auto mean = (r.unsqueeze(-1) * ek).sum(1);
  return mean.to(x.dtype()).to(x.device()).reshape(x.sizes());
}

torch::Tensor GaussianMixture::log_prob(const torch::Tensor& x, double s, const Process& p,
                                        const torch::Tensor& labels) const {
  const int64_t N = x.size(0);
  auto xf = x.reshape({N, dim()}).to(torch::kFloat64).cpu();
  auto lw = log_weights(*this, labels, N);
  lw = lw - torch::logsumexp(lw, 1, true);
  return torch::logsumexp(component_loglik(*this, xf, p.a(s), s) + lw, 1);
}

torch::Tensor GaussianMixture::sample(int64_t n, torch::Generator gen, int64_t label) const {
  auto lab = label >= 0 ? torch::full({1}, label, torch::kInt64) : torch::Tensor();
  auto w = torch::softmax(log_weights(*this, lab, 1)[0], 0);
  auto k = torch::multinomial(w, n, true, gen);
  auto z = at::randn({n, dim()}, gen, torch::kFloat64);
  auto x = means.index_select(0, k) + variances.index_select(0, k).sqrt() * z;
  std::vector<int64_t> sz{n};
  sz.insert(sz.end(), shape.begin(), shape.end());
  return x.to(torch::kFloat32).reshape(sz);
}

torch::Tensor GaussianMixture::mean(int64_t label) const {
  auto lab = label >= 0 ? torch::full({1}, label, torch::kInt64) : torch::Tensor();
  auto w = torch::softmax(log_weights(*this, lab, 1)[0], 0);
  return (w.unsqueeze(1) * means).sum(0);
}

torch::Tensor GaussianMixture::covariance(int64_t label) const {
  auto lab = label >= 0 ? torch::full({1}, label, torch::kInt64) : torch::Tensor();
  auto w = torch::softmax(log_weights(*this, lab, 1)[0], 0);
  auto mu = (w.unsqueeze(1) * means).sum(0);
  auto second = torch::diag((w.unsqueeze(1) * variances).sum(0)) +
                torch::einsum("k,ki,kj->ij", {w, means, means});
  return second - torch::outer(mu, mu);
}

Prediction GMMDenoiser::predict(const torch::Tensor& x, double s, const Cond& c) {
  return Prediction::from_x0(gmm_.posterior_mean(x, s, *proc_, c.labels), x, s, *proc_);
}

}  // namespace tweedie
