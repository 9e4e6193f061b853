// Time and class embeddings shared by the networks.
//
// - timestep_embedding: the sinusoidal embedding of ADM / DiT / diffusers
//   (Vaswani et al. 2017 positions, used for diffusion time by Ho et al. 2020):
//   freqs_i = exp(-log(max_period) * i / (half - downscale_freq_shift)),
//   i = 0..half-1, emb = [cos(t freqs), sin(t freqs)] (flip_sin_to_cos = true,
//   the ADM/DiT/SD order) or [sin, cos] (false), zero-padded for odd dims.
// - GaussianFourierFeatures: random Fourier features of Song et al. 2021
//   (score SDE, NCSN++): W ~ N(0, scale^2) fixed, emb = [sin(2 pi t W), cos(2 pi t W)].
//   W is drawn from a fixed seed by a portable generator (splitmix64 +
//   Box-Muller) and kept in float32 outside the state dict: a bf16 cast of the
//   model must not round W (a 0.4% error in W is a phase error of hundreds of
//   radians at large t), and the same W comes back on every machine.
//   Meant for model times of order 1 (log sigma, flow t).
// - TimestepEmbedder: either embedding followed by Linear-SiLU-Linear (ADM's
//   time_embed, DiT's t_embedder; submodule names "mlp.0", "mlp.2").
// - LabelEmbedder: a class table with one extra learned null class at index
//   num_classes; label -1 selects it (classifier-free guidance, Ho & Salimans 2022).
// Verified in tests/test_networks.cpp against the closed forms.
#pragma once
#include <string>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/embedding.h>
#include <torch/types.h>

namespace tweedie {

// t: [N] (any floating or integer dtype). Returns float32 [N, dim].
torch::Tensor timestep_embedding(const torch::Tensor& t, int64_t dim, double max_period = 10000.0,
                                 bool flip_sin_to_cos = true, double downscale_freq_shift = 0.0);

class GaussianFourierFeaturesImpl : public torch::nn::Module {
 public:
  GaussianFourierFeaturesImpl(int64_t dim, double scale = 16.0, uint64_t seed = 0);  // dim even
  torch::Tensor forward(const torch::Tensor& t);  // float32 [N, dim]
  torch::Tensor W;                                // float32 [dim/2], not a parameter or buffer
};
TORCH_MODULE(GaussianFourierFeatures);

enum class TimeEmbedKind { Sinusoidal, Fourier };
TimeEmbedKind time_embed_kind_from_string(const std::string& s);  // "sinusoidal", "fourier"
std::string to_string(TimeEmbedKind k);

class TimestepEmbedderImpl : public torch::nn::Module {
 public:
  // freq_dim: size of the sinusoidal/Fourier features; out_dim: the MLP width.
  // time_scale multiplies t before the embedding (e.g. 1000 for t in [0, 1]).
  TimestepEmbedderImpl(int64_t freq_dim, int64_t out_dim, TimeEmbedKind kind = TimeEmbedKind::Sinusoidal,
                       double time_scale = 1.0);
  // t: [N]; output [N, out_dim] in the dtype of the MLP weights.
  torch::Tensor forward(const torch::Tensor& t);

  torch::nn::Sequential mlp{nullptr};
  GaussianFourierFeatures fourier{nullptr};

 private:
  int64_t freq_dim_;
  TimeEmbedKind kind_;
  double time_scale_;
};
TORCH_MODULE(TimestepEmbedder);

class LabelEmbedderImpl : public torch::nn::Module {
 public:
  LabelEmbedderImpl(int64_t num_classes, int64_t dim);
  // labels: int64 [N] in [-1, num_classes); -1 is the null class. Out-of-range
  // labels are an Error naming the label.
  torch::Tensor forward(const torch::Tensor& labels);
  int64_t num_classes() const { return num_classes_; }

  torch::nn::Embedding embedding_table{nullptr};  // [num_classes + 1, dim]

 private:
  int64_t num_classes_;
};
TORCH_MODULE(LabelEmbedder);

}  // namespace tweedie
