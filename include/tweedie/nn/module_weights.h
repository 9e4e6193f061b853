// Loading a flat state dict into a torch module by name: every parameter and
// buffer of the module must be present under prefix + its module path with
// its shape and a floating (or, for integer buffers, the same) dtype, and no
// other key under the prefix may exist (except `ignored` names). Otherwise
// one Error names `what` and a few missing / unexpected / mis-shaped names.
// Values are converted to the module's dtype and device while copying.
// Verified in tests/test_networks.cpp (round trip, errors) and by every
// checkpoint loader that uses it (network files, SD UNet and VAE).
#pragma once
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "tweedie/io/state_dict.h"

namespace tweedie {

// The module's parameters then buffers, under their module paths.
std::vector<std::pair<std::string, torch::Tensor>> module_tensors(torch::nn::Module& m);

void load_module_weights(torch::nn::Module& m, const StateDict& sd, const std::string& what,
                         const std::string& prefix = "", const std::set<std::string>& ignored = {});

// Cast every parameter and buffer to dtype for inference; for bf16/fp16 the
// 4-D (convolution) weights are also stored channels_last, the layout the
// reduced-precision networks run in, so oneDNN does not reorder a weight copy
// on every call (measured: ~0.2 s of each SD1.5 UNet forward at 512).
void cast_for_inference(torch::nn::Module& m, torch::ScalarType dtype);

}  // namespace tweedie
