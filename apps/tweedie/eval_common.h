// Shared by `tweedie eval` and `tweedie bench fid`: the classifier-backed
// Evaluator and class-balanced generation from a model.
#pragma once
#include <memory>
#include <string>

#include "model_spec.h"
#include "tweedie/guide/guidance.h"
#include "tweedie/eval/evaluator.h"
#include "tweedie/sample/generate.h"

namespace tweedie::cli {

// Load the classifier (default_classifier_path() if empty) and the reference
// set's feature statistics.
std::unique_ptr<Evaluator> make_evaluator(const std::string& classifier_path, const std::string& reference);

// n class-balanced samples (labels i mod K for a K-class model, none for an
// unconditional one) under guidance g (CFG needs a class-conditional model),
// from seeded noise.
struct BalancedSamples {
  torch::Tensor images, labels;
  int nfe = 0;
};
BalancedSamples generate_balanced(const LoadedModel& model, const SamplerInfo& sampler, const std::vector<double>& sigmas,
                                  int64_t n, const GuidanceOptions& g, uint64_t seed, const GenerateOptions& opt);

// The model must produce what the classifier judges: same image shape and classes.
void check_model_fits(const LoadedModel& model, const Evaluator& ev, const std::string& model_path);

}  // namespace tweedie::cli
