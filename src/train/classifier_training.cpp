// Training the evaluation classifier (include/tweedie/train/classifier_training.h).
// Verified in tests/test_eval.cpp.
#include "tweedie/train/classifier_training.h"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <map>
#include <tuple>

#include <nlohmann/json.hpp>

#include "../core/config_reader.h"
#include "tweedie/core/error.h"
#include "tweedie/core/runtime.h"
#include "tweedie/models/network_io.h"
#include "tweedie/train/adamw.h"
#include "tweedie/train/lr_schedule.h"

namespace tweedie {

ClassifierTrainConfig ClassifierTrainConfig::parse(const std::string& json_text, const std::string& where) {
  detail::ConfigReader r(where, json_text, detail::ConfigReader::Style::WhyThenValue);
  ClassifierTrainConfig c;
  c.data = r.string("data", c.data);
  c.test_data = r.string("test_data", c.test_data);
  if (r.has("network")) c.network_json = r.object_json("network");
  c.epochs = r.integer("epochs", c.epochs, 1);
  c.batch_size = r.integer("batch_size", c.batch_size, 1);
  c.lr = r.positive("lr", c.lr);
  c.min_lr = r.number("min_lr", c.min_lr);
  c.warmup_steps = r.integer("warmup_steps", c.warmup_steps, 0);
  c.weight_decay = r.number("weight_decay", c.weight_decay);
  c.label_smoothing = r.probability("label_smoothing", c.label_smoothing);
  c.shift = r.integer("shift", c.shift, 0);
  c.hflip = r.boolean("hflip", c.hflip);
  c.seed = uint64_t(r.integer("seed", int64_t(c.seed), 0));
  c.threads = int(r.integer("threads", c.threads, 0));
  c.noise_process = r.string("noise_process", c.noise_process);
  r.finish();
  if (!c.noise_process.empty()) {
    try {
      make_process(c.noise_process);
    } catch (const Error& e) {
      r.bad("noise_process", e.what());
    }
  }
  if (c.min_lr < 0 || c.min_lr > c.lr) r.bad("min_lr", "must be in [0, lr]");
  if (c.weight_decay < 0) r.bad("weight_decay", "must be >= 0");
  c.config_json = r.object().dump();
  return c;
}

std::pair<torch::Tensor, torch::Tensor> noise_to_random_levels(const Process& proc, const torch::Tensor& x0,
                                                               at::Generator& gen) {
  const int64_t n = x0.size(0);
  auto steps = at::randint(proc.timesteps(), {n}, gen, torch::TensorOptions(torch::kInt64));
  auto acc = steps.accessor<int64_t, 1>();
  std::vector<float> alpha(n), sigma(n), t(n);
  for (int64_t i = 0; i < n; ++i) {
    const double s = proc.s_at_timestep(double(acc[i]));
    alpha[i] = float(proc.alpha_t(s)), sigma[i] = float(proc.sigma_t(s)), t[i] = float(proc.t_of(s));
  }
  std::vector<int64_t> shape(x0.dim(), 1);
  shape[0] = n;
  auto col = [&](std::vector<float>& v) { return torch::tensor(v).to(x0.options()).view(shape); };
  auto eps = at::randn(x0.sizes(), gen, x0.options());
  return {col(alpha) * x0 + col(sigma) * eps, torch::tensor(t)};
}

double classifier_accuracy(Classifier& c, const Dataset& d, int64_t batch_size, const Process* noise, uint64_t seed) {
  check(d.labelled() && d.size() > 0, d.source, ": accuracy needs labelled images");
  check(!c.time_conditional() || noise, "accuracy of a time-conditional classifier needs the noise process");
  torch::NoGradGuard ng;
  const bool was_training = c.is_training();
  c.eval();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  int64_t right = 0;
  for (int64_t i = 0; i < d.size(); i += batch_size) {
    auto idx = torch::arange(i, std::min(d.size(), i + batch_size), torch::kInt64);
    auto x = d.batch_images(idx);
    torch::Tensor t;
    if (noise) std::tie(x, t) = noise_to_random_levels(*noise, x, gen);
    auto pred = c.forward(x, t, {}).argmax(1);
    right += (pred == d.batch_labels(idx)).sum().item<int64_t>();
  }
  c.train(was_training);
  return double(right) / double(d.size());
}

namespace {

// The classifier config with in_channels, size and num_classes from the data
// where the config does not set them.
ClassifierConfig network_config(const std::string& network_json, const Dataset& d, bool noisy) {
  auto j = nlohmann::json::parse(network_json);
  if (noisy) j["time_conditional"] = true;
  if (!j.contains("in_channels")) j["in_channels"] = d.channels();
  if (!j.contains("image_size") && !j.contains("height") && !j.contains("width")) {
    j["height"] = d.height();
    j["width"] = d.width();
  }
  if (!j.contains("num_classes")) j["num_classes"] = d.num_classes();
  return ClassifierConfig::from_json(j.dump());
}

}  // namespace

ClassifierTrainResult train_classifier(const ClassifierTrainConfig& cfg, const std::string& out_path,
                                       const std::function<void(const TrainStats&)>& progress) {
  if (cfg.threads > 0) configure_threads(cfg.threads);
  Dataset train = load_dataset(cfg.data), test = load_dataset(cfg.test_data);
  check(train.labelled(), cfg.data, ": a classifier needs class labels (class subfolders or IDX labels)");
  check(test.labelled(), cfg.test_data, ": the test data has no class labels");
  check(train.size() >= cfg.batch_size, cfg.data, ": ", train.size(), " images, fewer than batch_size ",
        cfg.batch_size);
  check(test.class_names == train.class_names, cfg.test_data, ": its classes differ from those of ", cfg.data);
  check(test.images.sizes().slice(1) == train.images.sizes().slice(1), cfg.test_data, ": image size ",
        test.images.sizes().slice(1), " differs from the training data's ", train.images.sizes().slice(1));

  ProcessPtr noise = cfg.noise_process.empty() ? nullptr : make_process(cfg.noise_process);
  torch::manual_seed(cfg.seed);
  auto net = make_classifier(network_config(cfg.network_json, train, noise != nullptr));
  check(net->num_classes() == train.num_classes(), "classifier: num_classes ", net->num_classes(),
        " differs from the data's ", train.num_classes(), " classes");
  net->train();
  std::vector<std::pair<std::string, torch::Tensor>> named;
  std::vector<torch::Tensor> params;
  for (auto& p : net->named_parameters()) named.emplace_back(p.key(), p.value()), params.push_back(p.value());
  AdamW opt(named, {cfg.lr, 0.9, 0.999, 1e-8, cfg.weight_decay});
  DataOrder order(train.size(), cfg.batch_size, cfg.seed);
  const int64_t steps = cfg.epochs * (train.size() / cfg.batch_size);
  LRSchedule lrs{LRSchedule::Kind::Cosine, cfg.lr, std::min(cfg.warmup_steps, steps - 1), steps, cfg.min_lr};
  lrs.validate();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(cfg.seed + 1);
  auto ce = torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(cfg.label_smoothing);

  const auto t0 = std::chrono::steady_clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  for (int64_t step = 0; step < steps; ++step) {
    auto idx = order.next();
    auto x = train.batch_images(idx);
    if (cfg.hflip) x = random_hflip(x, gen);
    x = random_translate(x, cfg.shift, gen);
    torch::Tensor t;
    if (noise) std::tie(x, t) = noise_to_random_levels(*noise, x, gen);
    auto loss = torch::nn::functional::cross_entropy(net->forward(x, t, {}), train.batch_labels(idx), ce);
    const double lv = loss.item<double>();
    check(std::isfinite(lv), "classifier training diverged: the loss is ", lv, " at step ", step + 1);
    opt.zero_grad();
    loss.backward();
    clip_grad_norm(params, 1.0);
    const double lr = lr_at(lrs, step);
    opt.step(lr);
    if (progress) progress({step + 1, steps, lv, lr, double((step + 1) * cfg.batch_size) / std::max(1e-9, seconds())});
  }
  net->eval();
  ClassifierTrainResult res;
  res.steps = steps;
  res.seconds = seconds();
  res.test_accuracy = classifier_accuracy(*net, test, 500, noise.get(), cfg.seed + 2);
  nlohmann::json names = train.class_names;
  nlohmann::json training = {{"config", nlohmann::json::parse(cfg.config_json)},
                             {"steps", steps},
                             {"seconds", res.seconds},
                             {"test_data", cfg.test_data}};
  std::map<std::string, std::string> md{{"tweedie.class_names", names.dump()},
                                       {"tweedie.test_accuracy", std::to_string(res.test_accuracy)},
                                       {"tweedie.training", training.dump()}};
  if (noise) md["tweedie.process"] = noise->name();
  save_network(out_path, *net, md);
  return res;
}

}  // namespace tweedie
