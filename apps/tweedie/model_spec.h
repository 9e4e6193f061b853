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
  std::string description;
};

// "gmm:FILE.json" (an exact Gaussian-mixture denoiser). process_spec: "" for
// the model's default; prediction: the parameterization the model reports in.
LoadedModel load_model(const std::string& spec, const std::string& process_spec, const std::string& prediction);

}  // namespace tweedie::cli
