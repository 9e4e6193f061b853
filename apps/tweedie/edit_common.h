// Shared by `tweedie invert`, `tweedie edit` and `tweedie bench edit`: input
// images (a PNG, a folder of PNGs, a .npy batch, or the first N Fashion-MNIST
// test images of a class), the edit methods behind one call, and the
// classifier's verdicts on edited images.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "model_spec.h"
#include "tweedie/edit/edit_method.h"
#include "tweedie/models/classifier.h"
#include "tweedie/sample/sampler.h"

namespace tweedie::cli {

// path: IN.png, DIR (its images, sorted by name; see load_image_folder) or
// IN.npy [N, ...]; each image must have the model's sample shape (channels
// and size), else an Error naming the file. Returns float32 [N, ...] in [-1, 1].
torch::Tensor load_input_images(const std::string& path, const LoadedModel& model, const std::string& cmd);

// The first n Fashion-MNIST test images of class k (k < 0: of any class), in
// [-1, 1], and their labels. The model must take 28x28 grayscale images.
struct TestImages {
  torch::Tensor images, labels;
};
TestImages fashion_mnist_test_images(int64_t n, int64_t k, const LoadedModel& model, const std::string& cmd);

// Root-mean-square and largest absolute difference between two batches.
struct Difference {
  double rmse, max_abs;
};
Difference difference(const torch::Tensor& a, const torch::Tensor& b);

// ---- edits ------------------------------------------------------------------
// One edit: a registered method (edit/edit_method.h) and its settings.
struct EditSettings {
  std::string method;            // find_edit_method(method)
  double strength = -1;          // < 0: the method's default
  double cfg = 1.0;
  std::string sampler;           // "": the method's default
  MethodValues options;          // its own options (empty: their defaults)
};
using EditOutput = EditResult;

// Edit x [N, ...] (states of the sampling space: latents for text models)
// from condition `src` (empty: none) to `tgt` over the schedule.
// Text models: the prompts' words (methods .for_text_models()) and whether
// x is the noise a source is generated from (methods .from_seed()).
struct EditWords {
  std::vector<PromptWord> source, target;
  bool from_noise = false;
};
EditOutput run_edit(const EditSettings& e, const LoadedModel& model, const std::vector<double>& sigmas,
                    const torch::Tensor& x, const Cond& src, const Cond& tgt, uint64_t seed, const EditWords& words = {});
// The class conditions of a batch of n (-1: none, an empty Cond).
Cond class_condition(int64_t k, int64_t n);

// The classifier's class probabilities [N, K] for images in [-1, 1] (quantized to 8 bits first).
torch::Tensor class_probabilities(Classifier& clf, const torch::Tensor& images);
std::shared_ptr<Classifier> load_classifier(const std::string& path);  // "" = default_classifier_path()

}  // namespace tweedie::cli
