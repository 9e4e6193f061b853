// Training the evaluation classifier (models/classifier.h): cross-entropy
// with label smoothing, AdamW with warm-up and cosine decay, random
// translation and horizontal flips, then the test-set accuracy, stored in
// the model file's metadata ("tweedie.test_accuracy").
//
// Config: a JSON object with only these keys (others are an Error):
//   data ("fashion-mnist"), test_data ("fashion-mnist:test"),
//   network (classifier config object, models/classifier.h; in_channels,
//     size and num_classes default to the data's),
//   epochs (4), batch_size (128), lr (2e-3), min_lr (1e-5), warmup_steps (100),
//   weight_decay (0.05), label_smoothing (0.1), shift (2: random translation
//   by up to this many pixels, 0 = off), hflip (true), seed (0), threads (0),
//   noise_process ("": clean images).
//
// noise_process (a make_process spec, e.g. "vp:cosine"): the noise-conditional
// classifier p(y | x_t, t) of classifier guidance (Dhariwal & Nichol 2021).
// Each training image is noised to its own level, uniform over the process's
// training timesteps (Process::s_at_timestep), in the model's space
// x_t = alpha_t x0 + sigma_t eps, and the classifier (time_conditional, set
// automatically) sees x_t and the model time t. The test accuracy is then
// over test images noised the same way (a fixed seed), and the file's
// metadata holds the process ("tweedie.process") so guidance can check it.
// Verified in tests/test_eval.cpp (a short run learns, config errors).
#pragma once
#include <functional>
#include <string>
#include <utility>

#include <ATen/core/Generator.h>

#include "tweedie/models/classifier.h"
#include "tweedie/train/dataset.h"
#include "tweedie/train/trainer.h"

namespace tweedie {

struct ClassifierTrainConfig {
  std::string config_json;  // normalized, stored in the model file
  std::string data = "fashion-mnist", test_data = "fashion-mnist:test";
  std::string network_json = "{}";
  int64_t epochs = 4, batch_size = 128, warmup_steps = 100, shift = 2;
  double lr = 2e-3, min_lr = 1e-5, weight_decay = 0.05, label_smoothing = 0.1;
  bool hflip = true;
  uint64_t seed = 0;
  int threads = 0;
  std::string noise_process;  // "" = clean images

  static ClassifierTrainConfig parse(const std::string& json_text, const std::string& where);
};

struct ClassifierTrainResult {
  double test_accuracy = 0;
  int64_t steps = 0;
  double seconds = 0;
};

// Train and write the classifier to out_path (atomically). progress gets
// per-step statistics (TrainStats from trainer.h).
ClassifierTrainResult train_classifier(const ClassifierTrainConfig& cfg, const std::string& out_path,
                                       const std::function<void(const TrainStats&)>& progress = {});

// Fraction of the dataset's images the classifier labels correctly. For a
// time-conditional classifier give the process: each image is noised to a
// level drawn uniformly over its timesteps (seeded) as in training.
double classifier_accuracy(Classifier& c, const Dataset& d, int64_t batch_size = 500, const Process* noise = nullptr,
                           uint64_t seed = 0);

// Clean images x0 [N, ...] noised per sample to a uniform training timestep
// of proc: {x_t in the model's space, model times t [N]}.
std::pair<torch::Tensor, torch::Tensor> noise_to_random_levels(const Process& proc, const torch::Tensor& x0,
                                                               at::Generator& gen);

}  // namespace tweedie
