// Timestep (sinusoidal, Gaussian Fourier) and class embeddings; see
// include/tweedie/nn/embedding.h for the formulas and papers. Verified in
// tests/test_networks.cpp against the closed forms.
#include "tweedie/nn/embedding.h"

#include <cmath>

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/linear.h>

#include "tweedie/core/error.h"

#include "../core/splitmix.h"

namespace tweedie {

torch::Tensor timestep_embedding(const torch::Tensor& t, int64_t dim, double max_period, bool flip_sin_to_cos,
                                 double downscale_freq_shift) {
  check(dim >= 1, "timestep_embedding: dim must be positive, got ", dim);
  auto tf = t.to(torch::kFloat32).reshape({-1, 1});
  const int64_t half = dim / 2;
  if (half == 0) return torch::zeros({tf.size(0), dim}, tf.options());
  // Same operation order as ADM/DiT: -log(P) * i / (half - shift).
  auto freqs = torch::arange(half, tf.options()).mul_(-std::log(max_period)).div_(double(half) - downscale_freq_shift).exp_();
  auto args = tf * freqs.unsqueeze(0);
  auto emb = flip_sin_to_cos ? torch::cat({args.cos(), args.sin()}, 1) : torch::cat({args.sin(), args.cos()}, 1);
  if (dim % 2) emb = torch::cat({emb, torch::zeros({emb.size(0), 1}, emb.options())}, 1);
  return emb;
}

GaussianFourierFeaturesImpl::GaussianFourierFeaturesImpl(int64_t dim, double scale, uint64_t seed) {
  check(dim >= 2 && dim % 2 == 0, "Gaussian Fourier features need an even dimension, got ", dim);
  uint64_t state = seed + 0x5eed;
  auto uniform = [&] { return detail::uniform_open01(state); };
  std::vector<float> w(dim / 2);
  for (auto& x : w) x = float(scale * std::sqrt(-2 * std::log(uniform())) * std::cos(2 * M_PI * uniform()));
  W = torch::tensor(w, torch::kFloat32);
}

torch::Tensor GaussianFourierFeaturesImpl::forward(const torch::Tensor& t) {
  if (W.device() != t.device()) W = W.to(t.device());
  auto proj = t.to(torch::kFloat32).reshape({-1, 1}) * (W * (2 * M_PI)).unsqueeze(0);
  return torch::cat({proj.sin(), proj.cos()}, 1);
}

TimeEmbedKind time_embed_kind_from_string(const std::string& s) {
  if (s == "sinusoidal") return TimeEmbedKind::Sinusoidal;
  if (s == "fourier") return TimeEmbedKind::Fourier;
  fail("unknown time embedding '", s, "' (known: sinusoidal, fourier)");
}

std::string to_string(TimeEmbedKind k) { return k == TimeEmbedKind::Fourier ? "fourier" : "sinusoidal"; }

TimestepEmbedderImpl::TimestepEmbedderImpl(int64_t freq_dim, int64_t out_dim, TimeEmbedKind kind, double time_scale)
    : freq_dim_(freq_dim), kind_(kind), time_scale_(time_scale) {
  mlp = register_module("mlp", torch::nn::Sequential(torch::nn::Linear(freq_dim, out_dim), torch::nn::SiLU(),
                                                     torch::nn::Linear(out_dim, out_dim)));
  if (kind == TimeEmbedKind::Fourier) fourier = register_module("fourier", GaussianFourierFeatures(freq_dim, 16.0));
}

torch::Tensor TimestepEmbedderImpl::forward(const torch::Tensor& t) {
  auto tf = t.to(torch::kFloat32).reshape({-1});
  if (time_scale_ != 1.0) tf = tf * time_scale_;
  auto emb = kind_ == TimeEmbedKind::Fourier ? fourier->forward(tf) : timestep_embedding(tf, freq_dim_);
  const auto& w = mlp[0]->as<torch::nn::LinearImpl>()->weight;
  return mlp->forward(emb.to(w.scalar_type()));
}

LabelEmbedderImpl::LabelEmbedderImpl(int64_t num_classes, int64_t dim) : num_classes_(num_classes) {
  check(num_classes >= 1, "LabelEmbedder needs at least one class, got ", num_classes);
  embedding_table = register_module("embedding_table", torch::nn::Embedding(num_classes + 1, dim));
}

torch::Tensor LabelEmbedderImpl::forward(const torch::Tensor& labels) {
  check(!torch::isFloatingType(labels.scalar_type()) && labels.scalar_type() != torch::kBool,
        "class labels must be integers, got dtype ", labels.scalar_type());
  auto l = labels.to(torch::kInt64).reshape({-1});
  if (l.numel() > 0) {
    auto mm = torch::aminmax(l);
    const int64_t lo = std::get<0>(mm).item<int64_t>(), hi = std::get<1>(mm).item<int64_t>();
    if (lo < -1 || hi >= num_classes_)
      fail("class label ", lo < -1 ? lo : hi, " out of range: the model has ", num_classes_,
           " classes (0..", num_classes_ - 1, "; -1 is the null class)");
  }
  return embedding_table->forward(l.masked_fill(l.lt(0), num_classes_));
}

}  // namespace tweedie
