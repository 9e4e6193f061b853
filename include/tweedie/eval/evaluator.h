// Sample quality as `tweedie eval` reports it: FID in the feature space of
// the shipped classifier against a reference set (the Fashion-MNIST test
// set), improved precision and recall (k = 3, precision_recall.h) in the same
// space against as many reference images as there are samples (a fixed
// seeded draw, the same for every evaluation of N samples), and how often
// the classifier assigns conditional samples the class they were generated
// for.
//
// Images are quantized to 8 bits first, exactly as writing them to PNG and
// reading them back would, so evaluating a model directly and evaluating the
// PNGs that `tweedie sample -o DIR/` wrote give the same numbers.
// Verified in tests/test_eval.cpp.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tweedie/eval/fid.h"
#include "tweedie/eval/precision_recall.h"
#include "tweedie/models/classifier.h"
#include "tweedie/train/dataset.h"

namespace tweedie {

struct EvalResult {
  double fid = 0;
  int64_t n = 0;
  double precision = -1, recall = -1;  // -1 with too few images (k = 3 needs 4)
  double accuracy = -1;               // -1 when the samples have no labels
  std::vector<double> class_accuracy;  // per class (-1 where a class has no samples)
};

class Evaluator {
 public:
  Evaluator(std::shared_ptr<Classifier> classifier, const Dataset& reference, int64_t batch = 500);
  // images: [N, C, H, W] in [-1, 1]; labels: int64 [N] (the class each was
  // generated for) or undefined.
  EvalResult evaluate(const torch::Tensor& images, const torch::Tensor& labels = {}) const;
  // Features and predicted classes of images in [-1, 1] (quantized to 8 bits first).
  std::pair<torch::Tensor, torch::Tensor> features_and_predictions(const torch::Tensor& images) const;
  const FeatureStats& reference() const { return ref_; }
  // The classifier's accuracy on the reference set (-1 if it is unlabelled).
  double reference_accuracy() const { return ref_accuracy_; }
  Classifier& classifier() const { return *clf_; }

 private:
  std::shared_ptr<Classifier> clf_;
  FeatureStats ref_;
  torch::Tensor ref_feats_;  // [R, D], in a seeded random order
  int64_t batch_;
  double ref_accuracy_ = -1;
};

// x in [-1, 1] -> the values an 8-bit PNG of it holds (round((x + 1) * 127.5) / 127.5 - 1, clamped).
torch::Tensor quantize_8bit(const torch::Tensor& x);

}  // namespace tweedie
