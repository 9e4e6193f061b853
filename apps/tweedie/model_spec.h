// Turning a --model argument into a Denoiser.
#pragma once
#include <string>

#include "tweedie/models/denoiser.h"
#include "tweedie/process/prediction.h"

namespace tweedie::cli {

struct LoadedModel {
  DenoiserPtr denoiser;
  std::vector<int64_t> sample_shape;  // per-sample shape
  int64_t num_classes = 0;
  std::vector<std::string> class_names;
  bool image = false;  // samples are images in [-1, 1] ([C, H, W])
  std::string description;
};

// The model `tweedie sample` uses when no --model is given.
std::string default_model_path();

// The evaluation classifier `tweedie eval` uses when no --classifier is given
// ($TWEEDIE_CLASSIFIER or models/fashion_mnist_classifier.safetensors).
std::string default_classifier_path();

// "gmm:FILE.json" (an exact Gaussian-mixture denoiser; process_spec and
// prediction choose its process and the parameterization it reports in) or a
// tweedie model file (.safetensors; its process and parameterization are its
// own, and giving either option is an error).
LoadedModel load_model(const std::string& spec, const std::string& process_spec, const std::string& prediction);

// Class labels for --class: a name, an index, or "all" (each class `per` times).
torch::Tensor class_labels(const LoadedModel& m, const std::string& spec, int64_t n);

}  // namespace tweedie::cli
