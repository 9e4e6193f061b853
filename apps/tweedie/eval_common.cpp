#include "eval_common.h"

#include <ATen/CPUGeneratorImpl.h>

#include <fstream>

#include "tweedie/core/error.h"
#include "tweedie/models/network_io.h"

namespace tweedie::cli {

std::unique_ptr<Evaluator> make_evaluator(const std::string& classifier_path, const std::string& reference) {
  const std::string path = classifier_path.empty() ? default_classifier_path() : classifier_path;
  check(std::ifstream(path).good(), "classifier ", path, " is missing",
        classifier_path.empty() ? " (train it with the command in models/README.md)" : "");
  auto clf = as_classifier(load_network(path), path);
  return std::make_unique<Evaluator>(clf, load_dataset(reference));
}

void check_model_fits(const LoadedModel& model, const Evaluator& ev, const std::string& model_path) {
  check(model.image, model_path, ": FID needs an image model");
  auto want = ev.classifier().sample_shape();
  check(model.sample_shape == want, model_path, ": samples of shape ", c10::IntArrayRef(model.sample_shape),
        " do not fit the classifier's input ", c10::IntArrayRef(want));
  check(model.num_classes == 0 || model.num_classes == ev.classifier().num_classes(), model_path, ": ",
        model.num_classes, " classes, the classifier knows ", ev.classifier().num_classes());
}

BalancedSamples generate_balanced(const LoadedModel& model, const SamplerInfo& sampler, const std::vector<double>& sigmas,
                                  int64_t n, const GuidanceOptions& guidance, uint64_t seed, const GenerateOptions& opt) {
  check(n >= 2, "FID needs at least 2 samples (got -n ", n, ")");
  Cond cond;
  DenoiserPtr den = model.denoiser;
  BalancedSamples out;
  if (model.num_classes > 0) {
    out.labels = torch::arange(n, torch::kInt64).remainder(model.num_classes);
    cond.labels = out.labels;
  } else {
    check(!guidance.guides(), "--cfg needs a class-conditional model");
  }
  den = make_guidance(den, guidance);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), model.sample_shape.begin(), model.sample_shape.end());
  auto noise = at::randn(shape, gen, torch::kFloat32);
  torch::NoGradGuard ng;
  Generated g = generate(*den, sampler, sigmas, noise, cond, opt, gen);
  check(torch::isfinite(g.x).all().item<bool>(), "sampling produced non-finite values");
  out.images = g.x.clamp(-1, 1);
  out.nfe = g.nfe;
  return out;
}

}  // namespace tweedie::cli
