// FashionCanvas (train/fashion_canvas.h) against ../shared/fashion-canvas/SPEC.md:
// pixel values of rendered canvases, captions, layouts' distribution, the
// held-out pairs never drawn in training, determinism, and the real
// Fashion-MNIST splits.
#include <cmath>
#include <map>
#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tweedie/core/error.h"
#include "tweedie/train/fashion_canvas.h"

using namespace tweedie;

namespace {

// 10 random 28x28 items per class (labels 0..9 cycling).
Dataset fake_items(int64_t per_class = 3) {
  Dataset d;
  torch::manual_seed(7);
  d.images = torch::randint(0, 256, {10 * per_class, 1, 28, 28}, torch::kInt64).to(torch::kUInt8);
  d.labels = torch::arange(10 * per_class, torch::kInt64).remainder(10);
  for (auto& n : canvas_item_names()) d.class_names.push_back(n);
  d.source = "fake items";
  return d;
}

const std::set<std::string> kHeldOut{"green bag", "orange sneaker", "white dress", "magenta coat"};

}  // namespace

TEST(FashionCanvas, PaletteNamesAndHeldOutPairsAreTheSpecs) {
  const auto& p = canvas_palette();
  ASSERT_EQ(p.size(), 8u);
  EXPECT_EQ(p[0].name, "red");
  EXPECT_EQ(p[1].g, 150);
  EXPECT_EQ(p[5].name, "blue");
  EXPECT_EQ(p[5].b, 255);
  EXPECT_EQ(p[7].r, 245);
  EXPECT_EQ(canvas_item_names()[9], "ankle boot");
  EXPECT_EQ(canvas_cell_names()[3], "bottom right");
  int held = 0;
  for (int c = 0; c < 8; ++c)
    for (int i = 0; i < 10; ++i)
      if (canvas_held_out(c, i)) {
        ++held;
        EXPECT_TRUE(kHeldOut.count(p[size_t(c)].name + " " + canvas_item_names()[size_t(i)]));
      }
  EXPECT_EQ(held, 4);
}

TEST(FashionCanvas, RendersEveryPixelByTheDefinition) {
  FashionCanvas fc(fake_items(), true);
  CanvasLayout l;
  l.items = {{0, 7, 0}, {2, 3, 6}, {3, 8, 5}};  // red sneaker TL, magenta dress BL, blue bag BR
  const std::vector<int64_t> src{7, 13, 28};
  auto img = fc.render(l, src);
  ASSERT_EQ(img.sizes(), (std::vector<int64_t>{3, 64, 64}));
  ASSERT_EQ(img.scalar_type(), torch::kUInt8);
  auto expect = torch::zeros({3, 64, 64}, torch::kInt64);
  for (size_t k = 0; k < l.items.size(); ++k) {
    auto g = fc.items().images[src[k]][0].to(torch::kInt64);
    const auto& c = canvas_palette()[size_t(l.items[k].colour)];
    const int64_t r0 = (l.items[k].cell / 2) * 32 + 2, c0 = (l.items[k].cell % 2) * 32 + 2;
    const int rgb[3] = {c.r, c.g, c.b};
    for (int ch = 0; ch < 3; ++ch)  // round(g * c / 255) in double precision
      expect[ch].narrow(0, r0, 28).narrow(1, c0, 28).copy_(
          torch::round(g.to(torch::kFloat64) * rgb[ch] / 255.0).to(torch::kInt64));
  }
  EXPECT_TRUE(torch::equal(img.to(torch::kInt64), expect));
  // The empty top-right cell and the 2-pixel borders of full cells are black.
  EXPECT_EQ(img.narrow(1, 0, 32).narrow(2, 32, 32).sum().item<int64_t>(), 0);
  EXPECT_EQ(img.narrow(1, 0, 2).sum().item<int64_t>(), 0);
  EXPECT_EQ(img.narrow(1, 30, 4).narrow(2, 0, 32).sum().item<int64_t>(), 0);
  // A full-intensity pixel takes the palette colour itself.
  auto white = fake_items();
  white.images.fill_(255);
  FashionCanvas fw(white, true);
  auto w = fw.render(l, src);
  EXPECT_EQ(w[0][2][2].item<int>(), 255);
  EXPECT_EQ(w[1][2][2].item<int>(), 48);
  EXPECT_EQ(w[2][40][40].item<int>(), 255);  // blue at the bottom right
  EXPECT_EQ(w[1][40][40].item<int>(), 100);
}

TEST(FashionCanvas, CanonicalCaptionsAndTheirParsing) {
  CanvasLayout l;
  l.items = {{0, 7, 0}, {3, 8, 5}};
  EXPECT_EQ(canonical_caption(l), "a red sneaker at the top left and a blue bag at the bottom right");
  l.items = {{1, 9, 7}};
  EXPECT_EQ(canonical_caption(l), "a white ankle boot at the top right");
  uint64_t st = 11;
  for (int i = 0; i < 500; ++i) {
    auto r = random_canvas_layout(st, false);
    auto back = parse_canonical_caption(canonical_caption(r));
    EXPECT_EQ(back.items, r.items);
  }
  EXPECT_EQ(parse_canonical_caption("  A Red T-Shirt at the top left ").items,
            (std::vector<CanvasItem>{{0, 0, 0}}));
  auto err = [](const std::string& cap) {
    try {
      parse_canonical_caption(cap);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(err("").find("empty"), std::string::npos);
  EXPECT_NE(err("a purple bag at the top left").find("'a purple bag at the top left' is not a phrase"),
            std::string::npos);
  EXPECT_NE(err("a red bag at the bottom left and a red bag at the top left").find("reading order"),
            std::string::npos);
  EXPECT_NE(err("a red bag").find("is not a phrase"), std::string::npos);
}

TEST(FashionCanvas, LayoutsFollowTheDistributionAndTrainingNeverDrawsHeldOutPairs) {
  FashionCanvas train(fake_items(), true), test(fake_items(), false);
  std::map<int, int> counts, cells, items, colours;
  int held_test = 0, canonical = 0, shuffled = 0;
  const int N = 20000;
  for (int i = 0; i < N; ++i) {
    auto s = train.sample(3, i, true);
    ASSERT_FALSE(s.layout.has_held_out());
    for (auto& h : kHeldOut) ASSERT_EQ(s.caption.find(h), std::string::npos) << s.caption;
    ++counts[int(s.layout.items.size())];
    for (size_t k = 0; k < s.layout.items.size(); ++k) {
      const auto& it = s.layout.items[k];
      if (k) ASSERT_LT(s.layout.items[k - 1].cell, it.cell);
      ++cells[it.cell], ++items[it.item], ++colours[it.colour];
      ASSERT_EQ(train.items().labels[s.sources[k]].item<int64_t>(), it.item);
    }
    if (s.caption == canonical_caption(s.layout)) ++canonical;
    // Every phrase of a varied caption names its item, and only the layout's items.
    for (auto& it : s.layout.items)
      ASSERT_NE(s.caption.find(canvas_item_names()[size_t(it.item)]), std::string::npos) << s.caption;
    if (s.layout.items.size() >= 2) {
      const auto first = s.caption.find(canvas_item_names()[size_t(s.layout.items[0].item)]);
      const auto second = s.caption.find(canvas_item_names()[size_t(s.layout.items[1].item)]);
      if (s.layout.items[0].item != s.layout.items[1].item && second < first) ++shuffled;
    }
    if (test.sample(3, i, false).layout.has_held_out()) ++held_test;
  }
  // Tolerances are about 4 standard deviations.
  for (int n = 1; n <= 4; ++n) EXPECT_NEAR(counts[n], N / 4, 250) << n;
  const double items_total = 2.5 * N;
  for (int c = 0; c < 4; ++c) EXPECT_NEAR(cells[c], items_total / 4, 400);
  // The 76 allowed (colour, item) pairs are equally likely.
  for (int c = 0; c < 8; ++c) {
    int allowed = 0;
    for (int i = 0; i < 10; ++i) allowed += !canvas_held_out(c, i);
    EXPECT_NEAR(colours[c], items_total * allowed / 76, 300) << canvas_palette()[size_t(c)].name;
  }
  for (int i = 0; i < 10; ++i) {
    int allowed = 0;
    for (int c = 0; c < 8; ++c) allowed += !canvas_held_out(c, i);
    EXPECT_NEAR(items[i], items_total * allowed / 76, 300) << canvas_item_names()[size_t(i)];
  }
  // Half the captions are canonical; a varied one is canonical when every phrase
  // keeps colour and cell ((9/16)^n) and the order stays (1/2 + 1/(2 n!)).
  double p_same = 0;
  for (int n = 1; n <= 4; ++n) p_same += 0.25 * std::pow(9.0 / 16, n) * (0.5 + 0.5 / std::tgamma(n + 1));
  EXPECT_NEAR(canonical, N * (0.5 + 0.5 * p_same), 300);
  EXPECT_GT(shuffled, 1000);
  // Test-split layouts hold every pair: P(a held-out pair) per item = 4/80.
  EXPECT_NEAR(held_test, N * (1 - (0.25 * (0.95 + 0.9025 + 0.857375 + 0.81450625))), 200);
}

TEST(FashionCanvas, CanvasesArePureFunctionsOfSeedAndIndex) {
  FashionCanvas fc(fake_items(), true);
  auto [a, ca] = fc.batch(5, 100, 6, true);
  auto [b, cb] = fc.batch(5, 103, 3, true);
  EXPECT_TRUE(torch::equal(a.narrow(0, 3, 3), b));
  EXPECT_EQ(std::vector<std::string>(ca.begin() + 3, ca.end()), cb);
  auto [c, cc] = fc.batch(6, 100, 6, true);
  EXPECT_FALSE(torch::equal(a, c));
  // Canonical and varied captions of the same canvas share its image.
  auto [d, cd] = fc.batch(5, 100, 6, false);
  EXPECT_TRUE(torch::equal(a, d));
  for (size_t i = 0; i < cd.size(); ++i)
    EXPECT_EQ(cd[i], canonical_caption(fc.sample(5, 100 + int64_t(i), true).layout));
}

TEST(FashionCanvas, UsesTheRealFashionMnistSplits) {
  FashionCanvas train("train"), test("test");
  EXPECT_TRUE(train.train());
  EXPECT_FALSE(test.train());
  EXPECT_EQ(train.items().size(), 60000);
  EXPECT_EQ(test.items().size(), 10000);
  auto s = test.sample(0, 0, false);
  for (size_t k = 0; k < s.layout.items.size(); ++k)
    EXPECT_EQ(test.items().labels[s.sources[k]].item<int64_t>(), s.layout.items[k].item);
  EXPECT_THROW(FashionCanvas(Dataset{}, true), Error);
}

// ---- training the FashionCanvas model's parts --------------------------------

#include <cstdlib>

#include "sd_testing.h"
#include "testing.h"
#include "tweedie/io/safetensors.h"
#include "tweedie/models/sd_checkpoint.h"
#include "tweedie/models/prompt_weighting.h"
#include "tweedie/models/sd_network.h"
#include "tweedie/nn/module_weights.h"
#include "tweedie/pipelines/stable_diffusion.h"
#include "tweedie/train/autoencoder_training.h"
#include "tweedie/train/trainer.h"

namespace {

std::string fresh(const std::string& name) {
  std::string d = ::testing::TempDir() + "/fc_" + name + "_" + std::to_string(::getpid());
  EXPECT_EQ(std::system(("rm -rf '" + d + "' && mkdir -p '" + d + "'").c_str()), 0);
  return d;
}

std::string vae_config(int steps, const std::string& extra = "") {
  return R"({"vae": {"ch": 8, "ch_mult": [1, 2, 4], "num_res_blocks": 1, "norm_groups": 4}, "crop": 32,
    "batch_size": 4, "lr": 2e-3, "warmup_steps": 1, "log_every": 2, "checkpoint_every": 3, "eval_images": 8,
    "steps": )" + std::to_string(steps) + extra + "}";
}

struct Stop {};

}  // namespace

TEST(FashionCanvasTraining, AutoencoderLearnsResumesExactlyAndMeasuresItsScale) {
  auto cfg = AutoencoderTrainConfig::parse(vae_config(6), "test");
  std::string a = fresh("vae_a"), b = fresh("vae_b");
  AutoencoderTrainer(cfg, a, false).run();
  {
    AutoencoderTrainer t(cfg, b, false);
    try {
      t.run([](const TrainStats& s) {
        if (s.step == 3) throw Stop{};
      });
      FAIL() << "not interrupted";
    } catch (const Stop&) {
    }
  }
  AutoencoderTrainer r(cfg, b, true);
  EXPECT_EQ(r.step(), 3);
  r.run();
  tweedie::testing::expect_same_checkpoints(a + "/checkpoint.safetensors", b + "/checkpoint.safetensors");
  // The model file: its config's scaling factor is 1 / the std of the test latents.
  auto ev = r.evaluate();
  auto vae = load_autoencoder_file(b + "/model.safetensors");
  EXPECT_NEAR(vae->config().scaling_factor, 1 / ev.latent_std, 1e-9);
  EXPECT_EQ(vae->config().downscale(), 4);
  EXPECT_TRUE(std::isfinite(ev.psnr));
  for (auto f : {"/loss.png", "/reconstructions.png"})
    EXPECT_EQ(std::system(("test -s '" + b + f + "'").c_str()), 0) << f;
  // It learns: the loss of the last steps is below that of the first.
  auto longer = AutoencoderTrainConfig::parse(vae_config(40, R"(, "checkpoint_every": 100)"), "test");
  std::vector<double> losses;
  AutoencoderTrainer(longer, fresh("vae_c"), false).run([&](const TrainStats& s) { losses.push_back(s.loss); });
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) first += losses[size_t(i)], last += losses[losses.size() - 1 - size_t(i)];
  EXPECT_LT(last, 0.7 * first);
}

TEST(FashionCanvasTraining, AutoencoderFineTunesFromAnEarlierRunAndSetsTheLogVarianceBias) {
  const std::string a = fresh("vae_init_a");
  AutoencoderTrainer(AutoencoderTrainConfig::parse(vae_config(2), "test"), a, false).run();
  auto trained = load_autoencoder_file(a + "/model.safetensors");
  // init: the new run starts from the file's weights (before its first step).
  auto ft = AutoencoderTrainConfig::parse(vae_config(2, R"(, "loss": "l2", "init": ")" + a + R"(/model.safetensors")"), "t");
  AutoencoderTrainer t(ft, fresh("vae_init_b"), false);
  std::map<std::string, torch::Tensor> start;
  for (auto& [k, v] : module_tensors(*t.model())) start[k] = v;
  for (auto& [k, v] : module_tensors(*trained)) EXPECT_TRUE(torch::equal(start.at(k), v)) << k;
  // Another architecture is refused, naming the file.
  auto other = AutoencoderTrainConfig::parse(
      R"({"vae": {"ch": 16, "ch_mult": [1, 2, 4], "num_res_blocks": 1, "norm_groups": 4}, "crop": 32, "steps": 2,
          "init": ")" + a + R"(/model.safetensors"})", "t");
  EXPECT_NE(tweedie::testing::error_of([&] { AutoencoderTrainer(other, fresh("vae_init_c"), false); }).find("differs"),
            std::string::npos);
  // logvar_init: the log-variance half of quant_conv's bias, the mean half untouched.
  AutoencoderTrainer lv(AutoencoderTrainConfig::parse(vae_config(2, R"(, "logvar_init": -8)"), "t"), fresh("vae_lv"), false);
  torch::Tensor bias;
  for (auto& [k, v] : module_tensors(*lv.model()))
    if (k == "quant_conv.bias") bias = v;
  ASSERT_TRUE(bias.defined());
  EXPECT_TRUE(torch::all(bias.narrow(0, 4, 4) == -8).item<bool>());
  EXPECT_FALSE(torch::any(bias.narrow(0, 0, 4) == -8).item<bool>());
}

TEST(FashionCanvasTraining, ImageSourceReadsDatasetsInTheirEpochOrder) {
  ImageSource src("fashion-mnist:test", 3);
  const Dataset& d = *src.dataset();
  EXPECT_FALSE(src.is_canvas());
  // Images 9995 .. 10004: the last five of epoch 0's order, then the first five of epoch 1's.
  auto got = src.images(9995, 10);
  auto p0 = DataOrder::permutation(d.size(), 3, 0), p1 = DataOrder::permutation(d.size(), 3, 1);
  for (int i = 0; i < 10; ++i) {
    const int64_t idx = i < 5 ? p0[size_t(9995 + i)] : p1[size_t(i - 5)];
    EXPECT_TRUE(torch::equal(got[i], d.images[idx])) << i;
  }
  EXPECT_TRUE(torch::equal(src.images(9998, 4), got.narrow(0, 3, 4)));
  ImageSource canvases("fashion-canvas:test", 3);
  std::vector<std::string> caps;
  auto img = canvases.images(7, 2, &caps, false);
  EXPECT_EQ(img.sizes(), (std::vector<int64_t>{2, 3, 64, 64}));
  EXPECT_EQ(caps.size(), 2u);
}

TEST(FashionCanvasTraining, AutoencoderConfigErrorsNameTheKey) {
  auto err = [](const std::string& text) {
    try {
      AutoencoderTrainConfig::parse(text, "vae.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(err(R"({"steps": 3})").find("'vae'"), std::string::npos);
  EXPECT_NE(err(vae_config(3, R"(, "loss": "l3")")).find("'loss'"), std::string::npos);
  EXPECT_NE(err(vae_config(3, R"(, "crop": 30)")).find("'crop'"), std::string::npos);
  EXPECT_NE(err(vae_config(3, R"(, "lrr": 1)")).find("lrr"), std::string::npos);
  EXPECT_THROW(load_autoencoder_file("/nonexistent.safetensors"), Error);
}

TEST(FashionCanvasTraining, TextModelResumesExactlyAndItsFileIsAStableDiffusionModel) {
  const std::string vd = fresh("tvae");
  AutoencoderTrainer(AutoencoderTrainConfig::parse(vae_config(2), "test"), vd, false).run();
  auto text_cfg = [&](int steps) {
    return R"({"data": "fashion-canvas", "arch": "sd", "vae": ")" + vd + R"(/model.safetensors",
      "tokenizer": ")" + tweedie::testing::kTokenizer + R"(",
      "network": {"unet": {"height": 16, "width": 16, "model_channels": 16, "channel_mult": [1, 2],
                           "num_res_blocks": 1, "attention_resolutions": [2], "transformer_depth": [0, 1],
                           "transformer_depth_middle": 1, "num_head_channels": 8, "context_dim": 32,
                           "use_linear_in_transformer": true, "norm_groups": 8},
                  "text_encoder": {"width": 32, "layers": 2, "heads": 2, "intermediate": 64, "projection_dim": 0,
                                   "activation": "gelu"}},
      "process": "vp:cosine", "prediction": "v", "batch_size": 4, "warmup_steps": 1, "log_every": 1,
      "checkpoint_every": 2, "sample_steps": 2, "sample_per_class": 1, "steps": )" +
           std::to_string(steps) + "}";
  };
  auto cfg = TrainConfig::parse(text_cfg(4), "test");
  std::string a = fresh("text_a"), b = fresh("text_b");
  Trainer(cfg, a, false).run();
  {
    Trainer t(cfg, b, false);
    try {
      t.run([](const TrainStats& s) {
        if (s.step == 2) throw Stop{};
      });
      FAIL() << "not interrupted";
    } catch (const Stop&) {
    }
  }
  Trainer r(cfg, b, true);
  r.run();
  tweedie::testing::expect_same_checkpoints(a + "/checkpoint.safetensors", b + "/checkpoint.safetensors");
  EXPECT_EQ(std::system(("test -s '" + a + "/samples.png'").c_str()), 0);

  // The file is an SD 1.x single file with its architecture in the metadata ...
  const std::string file = a + "/model.safetensors";
  auto st = load_safetensors(file);
  EXPECT_TRUE(st.metadata.count("tweedie.sd"));
  EXPECT_NE(st.find("model.diffusion_model.input_blocks.0.0.weight"), nullptr);
  EXPECT_NE(st.find("first_stage_model.encoder.conv_in.weight"), nullptr);
  EXPECT_NE(st.find("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"), nullptr);
  EXPECT_EQ(st.at("model.diffusion_model.input_blocks.0.0.weight").scalar_type(), torch::kHalf);
  auto ck = load_sd_checkpoint(file);
  EXPECT_EQ(ck.family, "sd1");
  EXPECT_EQ(ck.prediction, "v");
  EXPECT_EQ(ck.schedule.beta_schedule, "squaredcos_cap_v2");
  EXPECT_EQ(ck.text_encoders.at(0).config.width, 32);
  EXPECT_EQ(ck.vae_config.downscale(), 4);
  // ... and the SD pipeline predicts what the trained EMA network predicts
  // (fp16 storage: agreement to fp16 rounding).
  SdPipelineOptions po;
  po.tokenizer = tweedie::testing::kTokenizer;
  StableDiffusion sd(file, po);
  const std::string prompt = "a red sneaker at the top left";
  Cond pc = sd.encode_prompt(prompt, 1, 64, 64);
  auto ema = r.ema_denoiser();
  auto& net = dynamic_cast<SdNetwork&>(ema->network());
  torch::NoGradGuard ng;
  // Round the EMA weights to fp16 as the file stores them.
  for (auto& p : net.parameters()) p.copy_(p.to(torch::kHalf).to(torch::kFloat32));
  ChunkOptions co;
  co.emphasis = false;
  Cond tc;
  ClipTokenizer tok(tweedie::testing::kTokenizer);
  tc.context = net.encode(prompt_windows(chunk_prompt(tok, prompt, co), tok.bos(), tok.eos(), tok.eos()).ids);
  EXPECT_LT((tc.context - pc.context).abs().max().item<double>(), 1e-4);
  auto x = torch::randn({1, 4, 16, 16}) * 3;
  auto p1 = sd.denoiser()->predict(x, 3.0, pc).x0();
  auto p2 = ema->predict(x, 3.0, tc).x0();
  EXPECT_LT((p1 - p2).abs().max().item<double>(), 1e-4);
  // Bad configs: arch sd needs the captioned data and a VAE.
  EXPECT_THROW(TrainConfig::parse(R"({"arch": "sd", "network": {"unet": {}, "text_encoder": {}}})", "x"), Error);
}
