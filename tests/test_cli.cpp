// The CLI end to end: outputs are written, seeds reproduce, inversion
// round-trips, and bad input gets one clear error line and a non-zero exit
// without leaving an output file behind.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>

#include "cli_testing.h"
#include "testing.h"
#include "tweedie/eval/evaluator.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/io/npy.h"
#include "tweedie/models/network_io.h"

using namespace tweedie;
using namespace tweedie::testing;

namespace {

// cli(), tmp(), exists() and expect_error() are in cli_testing.h.

TEST(CLI, SampleWritesNpyAndPngAndSeedsReproduce) {
  std::string a = tmp("a.npy"), b = tmp("b.npy"), png = tmp("ring.png");
  ASSERT_EQ(cli("sample -m gmm:models/gmm/ring2d.json -n 300 --seed 4 --sampler euler-a -q -o " + a).code, 0);
  ASSERT_EQ(cli("sample -m gmm:models/gmm/ring2d.json -n 300 --seed 4 --sampler euler-a -q -o " + b + " --plot " + png).code, 0);
  auto x = load_npy(a), y = load_npy(b);
  EXPECT_EQ(x.sizes(), torch::IntArrayRef({300, 2}));
  EXPECT_TRUE(torch::equal(x, y));
  // samples lie on the ring of radius 2
  EXPECT_NEAR(x.norm(2, 1).mean().item<double>(), 2.0, 0.1);
  Image img = read_png(png);
  EXPECT_EQ(img.width, 700);
}

TEST(CLI, InitNoiseFollowsTheSigmaMaxConvention) {
  // x_start = sigma_max * noise: Euler's first step from a known noise file is reproducible by hand.
  std::string noise = tmp("noise.npy"), out = tmp("fromnoise.npy");
  torch::manual_seed(0);
  auto z = torch::randn({8, 2});
  save_npy(noise, z);
  ASSERT_EQ(cli("sample -m gmm:models/gmm/ring2d.json --sampler euler --schedule karras --steps 1 -q --init-noise " +
                noise + " -o " + out)
                .code,
            0);
  auto gmm = GaussianMixture::load(source_path("models/gmm/ring2d.json"));
  auto p = make_process("vp");
  const double smax = p->s_max();
  // one Euler step to 0 lands on D(x, s_max)
  auto expect = gmm.posterior_mean(z * smax, smax, *p, {});
  EXPECT_TRUE(torch::allclose(load_npy(out), expect, 1e-4, 1e-5));
}

TEST(CLI, InvertRoundTrips) {
  std::string data = tmp("data.npy"), noise = tmp("inv.npy"), rec = tmp("rec.npy");
  auto gmm = GaussianMixture::load(source_path("models/gmm/ring2d.json"));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  save_npy(data, gmm.sample(64, gen));
  Result r = cli("invert -m gmm:models/gmm/ring2d.json --sampler dpmpp-2m --steps 100 -q -i " + data + " -o " + noise);
  ASSERT_EQ(r.code, 0) << r.out;
  auto pos = r.out.find("relative ");
  ASSERT_NE(pos, std::string::npos) << r.out;
  EXPECT_LT(std::stod(r.out.substr(pos + 9)), 0.02) << r.out;
  auto z = load_npy(noise);
  EXPECT_NEAR(z.std().item<double>(), 1.0, 0.25);  // inverted data looks like standard noise
  // Fixed-point inversion names the steps it leaves above --tol: one iteration and an unreachable
  // tolerance leave all 5; a reachable one none.
  r = cli("invert -m gmm:models/gmm/ring2d.json --method fixed-point --steps 6 --max-iter 1 --tol 1e-30 -q -i " + data);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("(5 of 5 steps above --tol)"), std::string::npos) << r.out;
  size_t listed = 0;
  for (size_t at = r.out.find("  step sigma "); at != std::string::npos; at = r.out.find("  step sigma ", at + 1)) ++listed;
  EXPECT_EQ(listed, 5u) << r.out;
  EXPECT_NE(r.out.find("after 1 iterations"), std::string::npos) << r.out;
  r = cli("invert -m gmm:models/gmm/ring2d.json --method fixed-point --steps 6 -q -i " + data);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("(0 of 5 steps above --tol)"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("  step sigma "), std::string::npos) << r.out;
}

TEST(CLI, BadInputGetsOneClearError) {
  const std::string m = "-m gmm:models/gmm/ring2d.json ";
  std::string out = tmp("never.npy");
  std::remove(out.c_str());
  expect_error("sample " + m + "--sampler nope -o " + out, "unknown sampler 'nope'", out);
  expect_error("sample " + m + "--schedule nope -o " + out, "unknown schedule 'nope'", out);
  expect_error("sample " + m + "--steps 0 -o " + out, "steps must be >= 1", out);
  expect_error("sample " + m + "--steps abc -o " + out, "--steps expects an integer", out);
  expect_error("sample " + m + "--frobnicate 3 -o " + out, "unknown option '--frobnicate'", out);
  expect_error("sample -m gmm:/nonexistent.json -o " + out, "/nonexistent.json", out);
  expect_error("sample -m nope:x -o " + out, "unknown model 'nope:x'", out);
  expect_error("sample " + m + "--process vq -o " + out, "unknown process 'vq'", out);
  expect_error("sample " + m + "-o " + tmp("x.txt"), "must end in .npy, .png or /");
  expect_error("sample -m gmm:models/gmm/mix64.json -n 4 -o " + tmp("never.png"), "scatter plots need a 2-D model",
               tmp("never.png"));
  // malformed JSON and NaN
  std::string bad = tmp("bad.json");
  std::ofstream(bad) << "{\"shape\": [2], \"weights\": [1,";
  expect_error("sample -m gmm:" + bad + " -o " + out, "malformed JSON", out);
  std::ofstream(bad) << "{\"shape\": [2], \"weights\": [1], \"means\": [[NaN, 0]], \"variances\": [[1, 1]]}";
  expect_error("sample -m gmm:" + bad + " -o " + out, bad, out);
  std::string nan = tmp("nan.npy");
  save_npy(nan, torch::tensor({0.0f, NAN}).reshape({1, 2}));
  expect_error("sample " + m + "--init-noise " + nan + " -o " + out, "NaN", out);
  save_npy(nan, torch::zeros({3, 5}));
  expect_error("sample " + m + "--init-noise " + nan + " -o " + out, "does not match", out);
  std::ofstream(nan) << "not numpy";
  expect_error("sample " + m + "--init-noise " + nan + " -o " + out, "not a .npy file", out);
  // inversion with a sampler that cannot invert
  expect_error("invert " + m + "--sampler euler-a -i " + nan + " -o " + out, "cannot invert", out);
  expect_error("frobnicate", "unknown command 'frobnicate'");
  EXPECT_EQ(cli("sample --help").code, 0);
}

TEST(CLI, SamplersListsEverySamplerAndSchedule) {
  Result r = cli("samplers");
  ASSERT_EQ(r.code, 0);
  for (auto& s : samplers()) EXPECT_NE(r.out.find(s.name), std::string::npos) << s.name;
  for (auto& s : schedules()) EXPECT_NE(r.out.find(s.name), std::string::npos) << s.name;
}

TEST(CLI, BenchSamplersWritesTableAndPlot) {
  std::string dir = ::testing::TempDir() + "/bench_cli";
  std::string mk = "mkdir -p " + dir;
  ASSERT_EQ(std::system(mk.c_str()), 0);
  Result r = cli("bench samplers -n 64 --nfe 5,10 --models models/gmm/ring2d.json -o " + dir);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("| dpmpp-2m |"), std::string::npos);
  EXPECT_TRUE(exists(dir + "/samplers.md"));
  EXPECT_TRUE(exists(dir + "/samplers_ring2d.png"));
}

TEST(CLI, BenchNetworkTimesAConfigsNetwork) {
  Result r = cli("bench network -c configs/tiny_fashion_mnist.json --batch 2 --train-batch 2 --reps 1 --min-time 0 -q");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("| inference forward, batch 2 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| training forward + backward, batch 2 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("arch unet"), std::string::npos) << r.out;
  expect_error("bench network", "--config is required");
  expect_error("bench network -c configs/tiny_fashion_mnist.json --batch 0", "--batch and --train-batch must be >= 1");
  expect_error("bench network -c /nonexistent.json", "/nonexistent.json");
}

}  // namespace

namespace {

TEST(CLI, TrainThenSampleImages) {
  std::string d = ::testing::TempDir() + "/cli_train";
  ASSERT_EQ(std::system(("rm -rf '" + d + "' && mkdir -p '" + d + "'").c_str()), 0);
  std::ofstream(d + "/cfg.json") << R"({"data": "fashion-mnist:test", "arch": "unet",
    "network": {"in_channels": 1, "image_size": 28, "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                "attention_resolutions": [2], "num_classes": 10, "norm_groups": 4, "num_heads": 2},
    "batch_size": 4, "steps": 3, "warmup_steps": 1, "sample_steps": 2, "sample_per_class": 1})";
  Result r = cli("train -q -c " + d + "/cfg.json -o " + d + "/run");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string m = "-m " + d + "/run/model.safetensors --steps 3 -q ";
  r = cli("sample " + m + "--class all -n 20 --cfg 2 -o " + d + "/grid.png");
  ASSERT_EQ(r.code, 0) << r.out;
  Image g = read_png(d + "/grid.png");
  EXPECT_EQ(g.width, 2 * 28 + 3 * 2);   // two per class
  EXPECT_EQ(g.height, 10 * 28 + 11 * 2);  // one row per class
  EXPECT_NE(g.text["parameters"].find("deis"), std::string::npos);
  r = cli("sample " + m + "--class sneaker -n 3 -o " + d + "/each/");
  ASSERT_EQ(r.code, 0) << r.out;
  for (auto f : {"00000_c7.png", "00001_c7.png", "00002_c7.png"}) EXPECT_TRUE(exists(d + "/each/" + f)) << f;
  r = cli("sample " + m + "--class 3 -n 2 --bf16 -o " + d + "/x.npy");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(load_npy(d + "/x.npy").sizes(), torch::IntArrayRef({2, 1, 28, 28}));
  expect_error("sample " + m + "--class hat -o " + d + "/y.png", "unknown class 'hat'", d + "/y.png");
  expect_error("sample " + m + "--process edm -o " + d + "/y.png", "apply to analytic models only", d + "/y.png");
  expect_error("sample " + m + "--class 10 -o " + d + "/y.png", "unknown class '10'", d + "/y.png");
  expect_error("sample " + m + "--class all -n 15 -o " + d + "/y.png", "multiple of the 10 classes", d + "/y.png");
  std::ofstream(d + "/bad.json") << R"({"arch": "unet", "network": {}, "lr": "fast"})";
  expect_error("train -c " + d + "/bad.json -o " + d + "/run2", "'lr' must be a number");
  // resume continues to a larger step count
  r = cli("train -q -c " + d + "/cfg.json -o " + d + "/run --resume --steps 5");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("(5 steps)"), std::string::npos) << r.out;
}

}  // namespace

namespace {

// tweedie eval reads PNG folders exactly as it judges tensors: the FID it
// prints for images written to disk equals the library's on the same images.
TEST(CLI, EvalImagesMatchesTheLibraryAndRejectsBadFolders) {
  std::string d = ::testing::TempDir() + "/cli_eval";
  ASSERT_EQ(std::system(("rm -rf '" + d + "' && mkdir -p '" + d + "/imgs' '" + d + "/mixed' '" + d + "/empty'").c_str()), 0);
  // 40 test-set images as samples "generated" for their true class.
  Dataset test = load_dataset("fashion-mnist:test");
  auto idx = torch::arange(40, torch::kInt64);
  auto imgs = test.batch_images(idx), labels = test.batch_labels(idx);
  for (int64_t i = 0; i < 40; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "/imgs/%05ld_c%ld.png", (long)i, (long)labels[i].item<int64_t>());
    write_png(d + name, tensor_to_image(imgs[i]));
  }
  Result r = cli("eval --images " + d + "/imgs --json " + d + "/r.json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = read_file(d + "/r.json");
  auto clf = as_classifier(load_network(source_path("models/fashion_mnist_classifier.safetensors")), "clf");
  Evaluator ev(clf, test);
  EvalResult want = ev.evaluate(imgs, labels);
  auto num = [&](const std::string& key) {
    auto p = j.find("\"" + key + "\":");
    EXPECT_NE(p, std::string::npos) << key << " in " << j;
    return std::stod(j.substr(p + key.size() + 3));
  };
  EXPECT_NEAR(num("fid"), want.fid, 1e-6 * std::max(1.0, want.fid));
  EXPECT_NEAR(num("accuracy"), want.accuracy, 1e-12);
  EXPECT_NEAR(num("precision"), want.precision, 1e-12);
  EXPECT_NEAR(num("recall"), want.recall, 1e-12);
  EXPECT_GT(want.precision, 0.5);  // real test images lie on the real manifold
  EXPECT_NE(r.out.find("class accuracy"), std::string::npos);
  EXPECT_NE(r.out.find("  recall "), std::string::npos) << r.out;

  write_png(d + "/mixed/00000_c1.png", tensor_to_image(imgs[0]));
  write_png(d + "/mixed/00001_c2.png", tensor_to_image(torch::zeros({1, 32, 32})));
  expect_error("eval --images " + d + "/mixed", "differs from");
  expect_error("eval --images " + d + "/empty", "at least 2 PNG images");
  expect_error("eval --images " + d + "/nope", "is not a directory");
  expect_error("eval --classifier models/fashion_mnist.safetensors --images " + d + "/imgs", "not a classifier");
  expect_error("eval -m models/fashion_mnist_classifier.safetensors -n 4", "not a diffusion model");
  expect_error("eval --images " + d + "/imgs -m models/fashion_mnist.safetensors", "not both");
  expect_error("eval -n 4 --steps 3 --nfe 5", "either --steps or --nfe");
  expect_error("train-classifier -o " + d + "/c.bin", "must end in .safetensors");
  std::ofstream(d + "/bad.json") << R"({"epochs": 2, "optimiser": "sgd"})";
  expect_error("train-classifier -c " + d + "/bad.json -o " + d + "/c.safetensors", "unknown key 'optimiser'",
               d + "/c.safetensors");
}

TEST(CLI, EvalSamplesAModelWithAnNfeBudget) {
  std::string d = ::testing::TempDir() + "/cli_eval2";
  ASSERT_EQ(std::system(("rm -rf '" + d + "' && mkdir -p '" + d + "'").c_str()), 0);
  Result r = cli("eval -q -n 20 --sampler heun --nfe 6 --json " + d + "/r.json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = read_file(d + "/r.json");
  EXPECT_NE(j.find("\"steps\": 3"), std::string::npos) << j;  // heun: 2 per step, 1 at the last -> 5 NFE
  EXPECT_NE(j.find("\"nfe\": 5"), std::string::npos) << j;
  EXPECT_NE(r.out.find("FID "), std::string::npos);
}

}  // namespace

// Guidance flags (guidance_args.h): they build exactly the library's
// make_guidance, CADS reproduces from the seed, and bad values get one line
// naming the option.
#include "tweedie/guide/guidance.h"
#include "tweedie/sample/generate.h"

namespace {

TEST(CLI, GuidanceFlagsBuildTheLibraryGuidance) {
  const std::string out = tmp("guided.npy");
  Result r = cli("sample -m gmm:models/gmm/ring2d.json -n 64 --seed 5 --class 2 --cfg 3 --negative-class 6 "
                 "--cfg-rescale 0.5 --guidance-interval 0.2,6 --cfg-schedule cosine --dynamic-threshold 0.9 "
                 "--dynamic-threshold-max 1.5 -q -o " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  // the same run through the library
  auto d = std::make_shared<GMMDenoiser>(GaussianMixture::load(source_path("models/gmm/ring2d.json")), make_process("vp"));
  GuidanceOptions g;
  g.set("cfg", 3.0);
  g.set("negative-class", "6");
  g.set("cfg-rescale", 0.5);
  g.set("guidance-interval", "0.2,6");
  g.set("cfg-schedule", "cosine");
  g.set("dynamic-threshold", 0.9);
  g.set("dynamic-threshold-max", 1.5);
  auto guided = make_guidance(d, g);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto noise = at::randn({64, 2}, gen, torch::kFloat32);
  Cond c;
  c.labels = torch::full({64}, 2, torch::kInt64);
  auto want = generate(*guided, find_sampler("deis"), make_schedule("karras", d->process(), 20), noise, c, {}, gen).x;
  EXPECT_TRUE(torch::equal(load_npy(out), want));
  // guiding class 2 (at (0, 2)) away from the opposite class 6 (at (0, -2)) pushes it out along the y axis
  auto plain = tmp("plain.npy");
  ASSERT_EQ(cli("sample -m gmm:models/gmm/ring2d.json -n 64 --seed 5 --class 2 --cfg 3 --negative-class 6 -q -o " + plain).code, 0);
  auto m = load_npy(plain).to(torch::kFloat64).mean(0);
  EXPECT_NEAR(m[0].item<double>(), 0.0, 0.2);
  EXPECT_GT(m[1].item<double>(), 4.0);
  Result h = cli("sample --help");
  for (auto f : {"--negative-class", "--cfg-rescale", "--guidance-interval", "--cfg-schedule", "--dynamic-threshold",
                 "--dynamic-threshold-max", "--cads-noise", "--cads-tau", "--cads-psi"})
    EXPECT_NE(h.out.find(f), std::string::npos) << f;
}

TEST(CLI, CADSReproducesFromTheSeed) {
  const std::string m = "sample --class 3 -n 2 --steps 3 --cfg 3 -q ";
  std::string a = tmp("cads_a.npy"), b = tmp("cads_b.npy"), c = tmp("cads_c.npy");
  ASSERT_EQ(cli(m + "--cads-noise 0.25 --seed 1 -o " + a).code, 0);
  ASSERT_EQ(cli(m + "--cads-noise 0.25 --seed 1 -o " + b).code, 0);
  ASSERT_EQ(cli(m + "--cads-noise 0.25 --cads-tau 0.5,0.8 --cads-psi 0 --seed 1 -o " + c).code, 0);
  EXPECT_TRUE(torch::equal(load_npy(a), load_npy(b)));
  EXPECT_FALSE(torch::equal(load_npy(a), load_npy(c)));  // --cads-tau and --cads-psi act
  EXPECT_TRUE(torch::isfinite(load_npy(c)).all().item<bool>());
}

TEST(CLI, EvalTakesTheGuidanceFlags) {
  std::string d = ::testing::TempDir() + "/cli_eval_guided";
  ASSERT_EQ(std::system(("rm -rf '" + d + "' && mkdir -p '" + d + "'").c_str()), 0);
  Result r = cli("eval -q -n 20 --steps 3 --cfg 2 --negative-class 0 --cfg-schedule linear --guidance-interval 0.1,50 "
                 "--cfg-rescale 0.7 --dynamic-threshold 0.995 --cads-noise 0.1 --json " + d + "/r.json");
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = read_file(d + "/r.json");
  EXPECT_NE(j.find("cfg 2, negative class 0, linear schedule, interval (0.1, 50], rescale 0.7, CADS"), std::string::npos)
      << j;
  EXPECT_NE(j.find("dynamic threshold 0.995"), std::string::npos) << j;
  EXPECT_NE(r.out.find("FID "), std::string::npos);
}

TEST(CLI, GuidanceBadInputGetsOneClearError) {
  const std::string m = "sample -m gmm:models/gmm/ring2d.json ", g = m + "--class 1 --cfg 3 ";
  std::string out = tmp("never_guided.npy");
  std::remove(out.c_str());
  expect_error(m + "--negative-class 2 -o " + out, "--negative-class needs --class", out);
  expect_error(m + "--class 1 --negative-class 2 -o " + out, "--negative-class has no effect without guidance", out);
  expect_error(g + "--negative-class nine -o " + out, "--negative-class: unknown class 'nine'", out);
  expect_error(g + "--negative-class all -o " + out, "takes one class", out);
  expect_error(g + "--guidance-interval 5,1 -o " + out, "--guidance-interval: LO must be below HI (got 5,1)", out);
  expect_error(g + "--guidance-interval 1 -o " + out, "--guidance-interval expects two numbers", out);
  expect_error(g + "--guidance-interval -1,2 -o " + out, "LO must be >= 0", out);
  expect_error(g + "--cfg-rescale 2 -o " + out, "--cfg-rescale must be in [0, 1]", out);
  expect_error(g + "--cfg-schedule quadratic -o " + out, "--cfg-schedule: unknown schedule 'quadratic'", out);
  expect_error(g + "--dynamic-threshold 1.5 -o " + out, "--dynamic-threshold must be in (0, 1)", out);
  expect_error(g + "--dynamic-threshold 0 -o " + out, "--dynamic-threshold must be in (0, 1)", out);
  expect_error(g + "--dynamic-threshold 0.99 --dynamic-threshold-max 0.5 -o " + out, "must be >= 1", out);
  expect_error(g + "--dynamic-threshold-max 2 -o " + out, "--dynamic-threshold-max needs --dynamic-threshold", out);
  expect_error(g + "--cads-noise 0.25 -o " + out, "--cads-noise needs a network model", out);
  expect_error(g + "--cads-tau 0.5,0.9 -o " + out, "--cads-tau needs --cads-noise", out);
  expect_error("sample --class 1 --cfg 3 --cads-noise 0.2 --cads-tau 0.9,0.5 -o " + out, "0 <= TAU1 < TAU2 <= 1", out);
  expect_error("sample --class 1 --cfg 3 --cads-noise -1 -o " + out, "--cads-noise must be > 0", out);
  expect_error("sample --cads-noise 0.2 -o " + out, "--cads-noise needs --class", out);
  expect_error("eval -n 4 --negative-class 99", "--negative-class: unknown class '99'");
  expect_error("bench fid -n 4 --cfg-rescale 3", "--cfg-rescale must be in [0, 1]");
  expect_error("bench sd --sizes 100", "--sizes entry 100 is not a multiple of 64");
  expect_error("bench sd --sizes 5x", "--sizes entry '5x' is not an integer");
  expect_error("bench sd --batches 0", "--batches entries must be >= 1, got 0");
  expect_error("bench sd --dtypes fp16", "unknown --dtypes entry 'fp16' (known: fp32, bf16)");
  expect_error("bench sd --only text", "--only must be unet or vae, got 'text'");
  expect_error("bench samplers --nfe 0", "--nfe entries must be >= 1, got 0");
}

}  // namespace
