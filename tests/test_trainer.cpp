// The trainer: exact resume, loss decreases, the model file it writes samples,
// bad configs are rejected with the key named, AdamW matches its closed form.
#include <gtest/gtest.h>

#include <cstdlib>

#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/io/safetensors.h"
#include "tweedie/models/network_io.h"
#include "tweedie/process/schedule.h"
#include "tweedie/sample/sampler.h"
#include "tweedie/train/adamw.h"
#include "tweedie/train/trainer.h"

using namespace tweedie;

namespace {

std::string dir(const std::string& name) {
  std::string d = ::testing::TempDir() + "/trainer_" + name;
  std::string cmd = "rm -rf '" + d + "' && mkdir -p '" + d + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  return d;
}

std::string tiny_config(int steps, const std::string& extra = "") {
  return R"({"data": "fashion-mnist:test", "arch": "unet",
    "network": {"in_channels": 1, "image_size": 28, "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                "attention_resolutions": [2], "num_classes": 10, "norm_groups": 4, "num_heads": 2, "dropout": 0.1},
    "process": "vp:cosine", "prediction": "v", "batch_size": 8, "warmup_steps": 2, "log_every": 2,
    "checkpoint_every": 3, "sample_steps": 3, "sample_per_class": 1, "hflip": true, "steps": )" +
         std::to_string(steps) + extra + "}";
}

struct Stop {};

TEST(Trainer, ResumeIsBitIdentical) {
  auto cfg = TrainConfig::parse(tiny_config(6), "test");
  std::string a = dir("straight"), b = dir("resumed");
  Trainer(cfg, a, false).run();
  {
    Trainer t(cfg, b, false);
    try {
      t.run([](const TrainStats& s) {
        if (s.step == 3) throw Stop{};  // interrupted right after the step-3 checkpoint
      });
      FAIL() << "not interrupted";
    } catch (const Stop&) {
    }
  }
  Trainer r(cfg, b, true);
  EXPECT_EQ(r.step(), 3);
  r.run();
  tweedie::testing::expect_same_checkpoints(a + "/checkpoint.safetensors", b + "/checkpoint.safetensors");
}

TEST(Trainer, LossFallsAndModelFileSamples) {
  auto cfg = TrainConfig::parse(tiny_config(60, R"(, "lr": 1e-3, "checkpoint_every": 100)"), "test");
  std::string d = dir("learn");
  std::vector<double> losses;
  Trainer t(cfg, d, false);
  t.run([&](const TrainStats& s) { losses.push_back(s.loss); });
  ASSERT_EQ(losses.size(), 60u);
  double first = 0, last = 0;
  for (int i = 0; i < 10; ++i) first += losses[i], last += losses[50 + i];
  EXPECT_LT(last, 0.8 * first);
  auto mf = load_model_file(d + "/model.safetensors");
  EXPECT_EQ(mf.class_names.size(), 10u);
  EXPECT_EQ(mf.class_names[7], "sneaker");
  EXPECT_EQ(mf.denoiser->process().name(), "vp:cosine");
  Cond c;
  c.labels = torch::tensor({7, -1}, torch::kInt64);
  auto sig = make_schedule("karras", mf.denoiser->process(), 4);
  torch::NoGradGuard ng;
  SamplerRun run(*mf.denoiser, sig, c);
  auto x = run_sampler(find_sampler("deis"), run, torch::randn({2, 1, 28, 28}) * sig[0]);
  EXPECT_TRUE(torch::isfinite(x).all().item<bool>());
  for (auto f : {"/loss.png", "/samples.png", "/checkpoint.safetensors"})
    EXPECT_EQ(std::system(("test -s '" + d + f + "'").c_str()), 0) << f;
}

TEST(Trainer, InitStartsFromAnEarlierModelOfTheSameArchitecture) {
  auto first = TrainConfig::parse(tiny_config(3), "test");
  std::string a = dir("init_from"), b = dir("init_to");
  Trainer(first, a, false).run();
  const std::string from = a + "/model.safetensors";
  auto fine = TrainConfig::parse(tiny_config(3, R"(, "init": ")" + from + R"(", "seed": 5)"), "test");
  Trainer t(fine, b, false);
  // before any step the network (and so its EMA) is the earlier model
  auto want = load_model_file(from).denoiser, got = t.ema_denoiser();
  auto wt = network_tensors(want->network()), gt = network_tensors(got->network());
  ASSERT_EQ(wt.size(), gt.size());
  for (size_t i = 0; i < wt.size(); ++i) EXPECT_TRUE(torch::equal(wt[i].second, gt[i].second)) << wt[i].first;
  t.run();
  EXPECT_EQ(t.step(), 3);
  // another architecture is refused, naming the file
  auto wider = TrainConfig::parse(
      R"({"data": "fashion-mnist:test", "arch": "unet", "init": ")" + from + R"(",
          "network": {"in_channels": 1, "image_size": 28, "model_channels": 16, "channel_mult": [1, 2],
                      "num_res_blocks": 1, "attention_resolutions": [2], "num_classes": 10, "norm_groups": 4,
                      "num_heads": 2}, "steps": 1, "warmup_steps": 0})",
      "test");
  try {
    Trainer bad(wider, dir("init_bad"), false);
    FAIL() << "a wider network took the earlier model's weights";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(from), std::string::npos) << e.what();
  }
}

TEST(Trainer, BadConfigsNameTheKey) {
  auto err = [](const std::string& text) {
    try {
      TrainConfig::parse(text, "cfg.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err(tiny_config(5, R"(, "learning_rate": 1)")).find("unknown key 'learning_rate'"), std::string::npos);
  EXPECT_NE(err(tiny_config(5, R"(, "cond_dropout": 1.5)")).find("'cond_dropout' must be in [0, 1]"), std::string::npos);
  EXPECT_NE(err(tiny_config(5, R"(, "prediction": "noise")")).find("unknown prediction 'noise'"), std::string::npos);
  EXPECT_NE(err(tiny_config(5, R"(, "batch_size": 0)")).find("'batch_size' must be >= 1"), std::string::npos);
  EXPECT_NE(err(tiny_config(0)).find("'steps' must be >= 1"), std::string::npos);
  EXPECT_NE(err("{\"arch\": \"unet\"").find("malformed JSON"), std::string::npos);
  EXPECT_NE(err(R"({"arch": "unet", "network": {"model_channels": -3}})").find("model_channels"), std::string::npos);
  EXPECT_NE(err(R"({"arch": "transformer9", "network": {}})").find("transformer9"), std::string::npos);
  // resuming with a changed config is refused
  auto cfg = TrainConfig::parse(tiny_config(3), "test");
  std::string d = dir("mismatch");
  Trainer(cfg, d, false).run();
  auto other = TrainConfig::parse(tiny_config(3, R"(, "lr": 5e-4)"), "test");
  try {
    Trainer t(other, d, true);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'lr' differs"), std::string::npos) << e.what();
  }
}

TEST(Trainer, AdamWClosedForm) {
  // One parameter, constant gradient g: after t steps (no decay) each update is
  // -lr * (1-b1^t)/(1-b1^t) * g / (|g| (1-b2^t)^.5/(1-b2^t)^.5 + eps) = -lr * sign(g) (up to eps).
  auto p = torch::tensor({1.0, -2.0}, torch::kFloat64).requires_grad_(true);
  AdamW opt({{"p", p}}, AdamW::Options{0.1, 0.9, 0.999, 1e-12, 0.5});
  for (int t = 0; t < 3; ++t) {
    opt.zero_grad();
    (p * torch::tensor({3.0, -0.5}, torch::kFloat64)).sum().backward();
    opt.step(0.1);
  }
  // each step: p *= (1 - lr*wd), then p -= lr * sign(g)
  double a = 1.0, b = -2.0;
  for (int t = 0; t < 3; ++t) a = a * 0.95 - 0.1, b = b * 0.95 + 0.1;
  EXPECT_NEAR(p[0].item<double>(), a, 1e-9);
  EXPECT_NEAR(p[1].item<double>(), b, 1e-9);
  auto st = opt.state();
  AdamW other({{"p", p}}, AdamW::Options{});
  other.load_state([&](const std::string& k) -> const torch::Tensor* {
    for (auto& kv : st)
      if (kv.first == k) return &kv.second;
    return nullptr;
  });
  EXPECT_EQ(other.steps(), 3);
  auto g = torch::tensor({3.0, 0.0});
  EXPECT_NEAR(clip_grad_norm({}, 1.0), 0.0, 0);
}

}  // namespace
