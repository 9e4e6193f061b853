// Image classifier: the feature extractor and judge for evaluation (FID in
// its feature space, accuracy of class-conditional samples), in the role
// Inception-v3 plays for ImageNet-scale FID but trained by tweedie on the
// data it judges.
//
// A plain convolutional network: per stage two 3x3 convolutions, each
// followed by GroupNorm and SiLU, with 2x2 average pooling between stages;
// the last stage's map, flattened, goes through a linear layer and SiLU to
// the feature vector (feature_dim values, the FID space), then dropout and a
// linear layer give the logits.
//
// JSON config (every key optional; config_json() writes them all):
//   in_channels (1), image_size or height/width (28), channels ([32, 64, 128]),
//   feature_dim (128), num_classes (10), norm_groups (8), dropout (0.1),
//   time_conditional (false).
//
// time_conditional: the noise-conditional variant p(y | x_t, t) for
// classifier guidance (Dhariwal & Nichol 2021): a sinusoidal embedding of the
// model time t -> Linear-SiLU-Linear of width 4*channels[0] ("time_embed"),
// and per stage a linear map of it ("stages.<i>.temb") added to the first
// convolution's normalized output (before its SiLU). forward(x_t, t, c)
// then uses t [N]; features() needs t and is unavailable. Off, the module
// paths and the shipped evaluation classifier are as before.
//
// It is a Network (arch "classifier"), so it is saved, loaded, EMA-averaged
// and optimized like the diffusion networks; forward(x, t, c) returns logits
// [N, num_classes] and ignores t and c (it sees clean images in [-1, 1]).
// Module paths: stages.<i>.{conv1,norm1,conv2,norm2}, fc, head.
// Verified in tests/test_eval.cpp (shapes, config errors, round trip, the
// shipped classifier's test accuracy).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tweedie/models/network.h"

namespace tweedie {

struct ClassifierConfig {
  int64_t in_channels = 1, height = 28, width = 28;
  std::vector<int64_t> channels{32, 64, 128};
  int64_t feature_dim = 128, num_classes = 10, norm_groups = 8;
  double dropout = 0.1;
  bool time_conditional = false;

  static ClassifierConfig from_json(const std::string& text);  // Error "classifier config: 'key' = ...: why"
  std::string to_json() const;
  void validate() const;
};

class Classifier : public Network {
 public:
  // Feature vectors [N, feature_dim] (float32) of images in [-1, 1].
  virtual torch::Tensor features(const torch::Tensor& x) = 0;
  // Logits from features (the final linear layer).
  virtual torch::Tensor logits(const torch::Tensor& features) = 0;
  // True for p(y | x_t, t): forward's t is the noise level's model time.
  virtual bool time_conditional() const { return false; }
};

std::shared_ptr<Classifier> make_classifier(const ClassifierConfig& cfg);
// A network loaded from a file as a classifier; Error naming the file if it
// holds another architecture.
std::shared_ptr<Classifier> as_classifier(const NetworkPtr& net, const std::string& path);

}  // namespace tweedie
