// The evaluation classifier (include/tweedie/models/classifier.h).
// Verified in tests/test_eval.cpp.
#include "tweedie/models/classifier.h"

#include <nlohmann/json.hpp>

#include "../core/config_reader.h"
#include "tweedie/core/error.h"
#include "tweedie/nn/embedding.h"
#include "tweedie/nn/norm.h"

namespace tweedie {

ClassifierConfig ClassifierConfig::from_json(const std::string& text) {
  detail::ConfigReader r("classifier", text);
  ClassifierConfig c;
  c.in_channels = r.integer("in_channels", c.in_channels, 1);
  r.image_size(c.height, c.width);
  c.channels = r.int_list("channels", c.channels, 1);
  if (c.channels.empty()) r.bad("channels", "must be a non-empty list of positive integers");
  c.feature_dim = r.integer("feature_dim", c.feature_dim, 2);
  c.num_classes = r.integer("num_classes", c.num_classes, 2);
  c.norm_groups = r.integer("norm_groups", c.norm_groups, 1);
  c.dropout = r.number("dropout", c.dropout);
  c.time_conditional = r.boolean("time_conditional", c.time_conditional);
  r.finish();
  c.validate();
  return c;
}

std::string ClassifierConfig::to_json() const {
  nlohmann::json j;
  j["in_channels"] = in_channels;
  j["height"] = height;
  j["width"] = width;
  j["channels"] = channels;
  j["feature_dim"] = feature_dim;
  j["num_classes"] = num_classes;
  j["norm_groups"] = norm_groups;
  j["dropout"] = dropout;
  if (time_conditional) j["time_conditional"] = true;  // absent in clean classifiers' files, as before the key existed
  return j.dump();
}

void ClassifierConfig::validate() const {
  for (int64_t ch : channels)
    check(ch % norm_groups == 0, "classifier config: 'norm_groups' = ", norm_groups, " does not divide channels ", ch);
  const int64_t f = int64_t(1) << (channels.size() - 1);
  check(height % f == 0 && width % f == 0, "classifier config: ", height, "x", width, " is not divisible by ", f,
        " (", channels.size(), " stages halve it ", channels.size() - 1, " times)");
  check(dropout >= 0 && dropout < 1, "classifier config: 'dropout' = ", dropout, ": must be in [0, 1)");
}

namespace {

struct StageImpl : torch::nn::Module {
  // temb_dim > 0: a time-conditional stage ("temb" adds the time embedding's projection after norm1).
  // Members are constructed (and registered, which fixes the order of their random initialisation)
  // in declaration order: conv1, conv2, norm1, norm2.
  StageImpl(int64_t in, int64_t out, int64_t groups, int64_t temb_dim)
      : conv1(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1)))),
        conv2(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(out, out, 3).padding(1)))),
        norm1(register_module("norm1", GroupNorm32(groups, out))),
        norm2(register_module("norm2", GroupNorm32(groups, out))) {
    if (temb_dim > 0) temb = register_module("temb", torch::nn::Linear(temb_dim, out));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& emb = {}) {
    auto h = norm1->forward(conv1->forward(x));
    if (temb) h = h + temb->forward(emb).unsqueeze(2).unsqueeze(3);
    h = torch::silu(h);
    return torch::silu(norm2->forward(conv2->forward(h)));
  }
  torch::nn::Conv2d conv1, conv2;
  GroupNorm32 norm1, norm2;
  torch::nn::Linear temb{nullptr};
};
TORCH_MODULE(Stage);

class ConvClassifier : public Classifier {
 public:
  explicit ConvClassifier(const ClassifierConfig& c) : cfg_(c) {
    const int64_t temb_dim = c.time_conditional ? 4 * c.channels[0] : 0;
    if (temb_dim > 0) time_embed_ = register_module("time_embed", TimestepEmbedder(c.channels[0], temb_dim));
    auto list = register_module("stages", torch::nn::ModuleList());
    int64_t in = c.in_channels;
    for (int64_t ch : c.channels) {
      stages_.push_back(Stage(in, ch, c.norm_groups, temb_dim));
      list->push_back(stages_.back());
      in = ch;
    }
    const int64_t f = int64_t(1) << (c.channels.size() - 1);
    fc_ = register_module("fc", torch::nn::Linear(in * (c.height / f) * (c.width / f), c.feature_dim));
    head_ = register_module("head", torch::nn::Linear(c.feature_dim, c.num_classes));
  }

  torch::Tensor features(const torch::Tensor& x) override {
    check(!cfg_.time_conditional, "classifier: a time-conditional classifier needs the noise level's time (forward)");
    return features_at(x, {});
  }

  torch::Tensor logits(const torch::Tensor& f) override {
    return head_->forward(torch::dropout(f, cfg_.dropout, is_training()));
  }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const Cond&) override {
    return logits(features_at(x, t));
  }
  bool time_conditional() const override { return cfg_.time_conditional; }
  std::string arch() const override { return "classifier"; }
  std::string config_json() const override { return cfg_.to_json(); }
  std::vector<int64_t> sample_shape() const override { return {cfg_.in_channels, cfg_.height, cfg_.width}; }
  int64_t num_classes() const override { return cfg_.num_classes; }

 private:
  // t: model times [N] (or one) for a time-conditional classifier, ignored otherwise.
  torch::Tensor features_at(const torch::Tensor& x, const torch::Tensor& t) {
    check(x.dim() == 4 && x.size(1) == cfg_.in_channels && x.size(2) == cfg_.height && x.size(3) == cfg_.width,
          "classifier: expected images [N, ", cfg_.in_channels, ", ", cfg_.height, ", ", cfg_.width, "], got ",
          x.sizes());
    torch::Tensor emb;
    if (time_embed_) {
      check(t.defined(), "classifier: a time-conditional classifier needs the noise level's time t");
      auto tt = t.reshape({-1}).to(x.device());
      if (tt.numel() == 1 && x.size(0) != 1) tt = tt.expand({x.size(0)});
      check(tt.numel() == x.size(0), "classifier: ", tt.numel(), " times for a batch of ", x.size(0));
      emb = time_embed_->forward(tt);
    }
    auto h = x;
    for (size_t i = 0; i < stages_.size(); ++i) {
      if (i > 0) h = torch::avg_pool2d(h, 2);
      h = stages_[i]->forward(h, emb);
    }
    return torch::silu(fc_->forward(h.flatten(1))).to(torch::kFloat32);
  }

  ClassifierConfig cfg_;
  TimestepEmbedder time_embed_{nullptr};
  std::vector<Stage> stages_;
  torch::nn::Linear fc_{nullptr}, head_{nullptr};
};

}  // namespace

std::shared_ptr<Classifier> make_classifier(const ClassifierConfig& cfg) {
  auto net = std::make_shared<ConvClassifier>(cfg);
  net->eval();
  return net;
}

std::shared_ptr<Classifier> as_classifier(const NetworkPtr& net, const std::string& path) {
  auto c = std::dynamic_pointer_cast<Classifier>(net);
  check(c != nullptr, path, ": holds a '", net->arch(), "' network, not a classifier");
  return c;
}

}  // namespace tweedie
