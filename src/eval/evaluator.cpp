// FID and class accuracy of samples (include/tweedie/eval/evaluator.h).
#include "tweedie/eval/evaluator.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

#include "tweedie/core/error.h"

namespace tweedie {

torch::Tensor quantize_8bit(const torch::Tensor& x) {
  return ((x.to(torch::kFloat32) + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1;
}

Evaluator::Evaluator(std::shared_ptr<Classifier> classifier, const Dataset& reference, int64_t batch)
    : clf_(std::move(classifier)), batch_(batch) {
  check(clf_ != nullptr, "evaluator: no classifier");
  clf_->eval();
  check(batch_ >= 1, "evaluator: batch must be >= 1");
  check(reference.size() >= 2, reference.source, ": the reference set needs at least 2 images");
  auto shape = clf_->sample_shape();
  check(reference.images.sizes().slice(1).vec() == shape, reference.source, ": images of shape ",
        reference.images.sizes().slice(1), " do not fit the classifier's input ", c10::IntArrayRef(shape));
  std::vector<torch::Tensor> feats;
  int64_t right = 0;
  for (int64_t i = 0; i < reference.size(); i += batch_) {
    auto idx = torch::arange(i, std::min(reference.size(), i + batch_), torch::kInt64);
    torch::NoGradGuard ng;
    feats.push_back(clf_->features(reference.batch_images(idx)));
    if (reference.labelled())
      right += (clf_->logits(feats.back()).argmax(1) == reference.batch_labels(idx)).sum().item<int64_t>();
  }
  const auto all = torch::cat(feats);
  ref_ = FeatureStats::of(all);
  // A fixed draw of the reference set for precision/recall: the first N of a seeded permutation.
  auto gen = at::detail::createCPUGenerator(0x5eed);
  ref_feats_ = all.index_select(0, torch::randperm(reference.size(), gen, torch::kInt64));
  if (reference.labelled()) ref_accuracy_ = double(right) / double(reference.size());
}

std::pair<torch::Tensor, torch::Tensor> Evaluator::features_and_predictions(const torch::Tensor& images) const {
  auto shape = clf_->sample_shape();
  check(images.dim() == 4 && images.sizes().slice(1).vec() == shape, "evaluator: images of shape ", images.sizes(),
        " do not fit the classifier's input [N, ", c10::IntArrayRef(shape), "]");
  check(torch::isfinite(images).all().item<bool>(), "evaluator: the images contain NaN or infinity");
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> feats, preds;
  for (int64_t i = 0; i < images.size(0); i += batch_) {
    auto f = clf_->features(quantize_8bit(images.narrow(0, i, std::min(batch_, images.size(0) - i))));
    preds.push_back(clf_->logits(f).argmax(1));
    feats.push_back(f);
  }
  return {torch::cat(feats), torch::cat(preds)};
}

EvalResult Evaluator::evaluate(const torch::Tensor& images, const torch::Tensor& labels) const {
  check(images.dim() >= 1 && images.size(0) >= 2, "evaluator: FID needs at least 2 images");
  auto [feats, pred] = features_and_predictions(images);
  EvalResult r;
  r.n = images.size(0);
  r.fid = frechet_distance(FeatureStats::of(feats), ref_);
  const int64_t m = std::min(r.n, ref_feats_.size(0));
  if (m > 3) {
    PrecisionRecall pr = precision_recall(ref_feats_.narrow(0, 0, m), feats);
    r.precision = pr.precision, r.recall = pr.recall;
  }
  if (labels.defined()) {
    check(labels.dim() == 1 && labels.size(0) == r.n, "evaluator: ", labels.numel(), " labels for ", r.n, " images");
    auto lab = labels.to(torch::kInt64).cpu();
    const int64_t k = clf_->num_classes();
    check((lab >= 0).all().item<bool>() && (lab < k).all().item<bool>(), "evaluator: labels must be in [0, ", k,
          ")");
    auto right = (pred.cpu() == lab).to(torch::kFloat64);
    r.accuracy = right.mean().item<double>();
    for (int64_t c = 0; c < k; ++c) {
      auto m = lab == c;
      const int64_t cnt = m.sum().item<int64_t>();
      r.class_accuracy.push_back(cnt ? right.masked_select(m).mean().item<double>() : -1.0);
    }
  }
  return r;
}

}  // namespace tweedie
