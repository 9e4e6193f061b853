// The shipped FashionCanvas text-to-image model (models/fashion_canvas.safetensors):
// within the size budget, an SD 1.x single file that the SD loader reads with
// the architecture of configs/fashion_canvas.json, the default of `tweedie
// generate` (empty and over-long prompts handled as for SD), and a small
// seeded `tweedie eval` run reproduces the numbers committed beside it
// (models/fashion_canvas/eval_n32.json, quoted in docs/fashion-canvas.md).
// The model was trained with CLIP's real vocabulary, so the runs that
// tokenize need ../shared/clip-tokenizer and are skipped without it.
#include <sys/stat.h>

#include <cmath>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_testing.h"
#include "testing.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/io/safetensors.h"
#include "tweedie/models/sd_checkpoint.h"

using namespace tweedie;
using tweedie::testing::cli;
using tweedie::testing::source_path;
using tweedie::testing::tmp;

namespace {

const std::string kModel = "models/fashion_canvas.safetensors";

bool have_clip_vocabulary() {
  return std::ifstream(std::string(TWEEDIE_SOURCE_DIR) + "/../shared/clip-tokenizer/vocab.json").good();
}

}  // namespace

TEST(FashionCanvasModel, ShippedFileIsAnSdSingleFileWithinTheBudget) {
  struct stat st{};
  ASSERT_EQ(stat(source_path(kModel).c_str(), &st), 0) << kModel << " is missing";
  EXPECT_LE(st.st_size, 30 * 1000 * 1000);
  SdCheckpoint c = load_sd_checkpoint(source_path(kModel));
  EXPECT_EQ(c.family, "sd1");
  EXPECT_EQ(c.prediction, "v");
  const auto cfg = nlohmann::json::parse(read_file(source_path("configs/fashion_canvas.json")));
  const auto& u = cfg["network"]["unet"];
  EXPECT_EQ(c.unet_config.model_channels, u["model_channels"].get<int64_t>());
  EXPECT_EQ(c.unet_config.context_dim, u["context_dim"].get<int64_t>());
  EXPECT_EQ(c.unet_config.height, 16);
  EXPECT_EQ(c.vae_config.downscale(), 4);
  EXPECT_EQ(c.vae_config.z_channels, 4);
  EXPECT_GT(c.vae_config.scaling_factor, 0);
  ASSERT_EQ(c.text_encoders.size(), 1u);
  EXPECT_EQ(c.text_encoders[0].config.width, cfg["network"]["text_encoder"]["width"].get<int64_t>());
  // Its training record: the config it was trained with and how long.
  auto meta = load_safetensors(source_path(kModel)).metadata;
  ASSERT_TRUE(meta.count("tweedie.training"));
  auto tr = nlohmann::json::parse(meta.at("tweedie.training"));
  EXPECT_EQ(tr["steps"].get<int64_t>(), tr["config"]["steps"].get<int64_t>());
  EXPECT_LE(tr["train_seconds"].get<double>(), 3 * 3600.0);
}

TEST(FashionCanvasModel, GenerateUsesItByDefaultWithEmptyAndOverLongPrompts) {
  if (!have_clip_vocabulary()) GTEST_SKIP() << "needs CLIP's vocabulary in ../shared/clip-tokenizer";
  const std::string out = tmp("fc_default.png");
  auto r = cli("generate -q --steps 4 --cfg 5 -p \"a red sneaker at the top left\" -o " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  Image img = read_png(out);
  EXPECT_EQ(img.width, 64);
  EXPECT_EQ(img.height, 64);
  EXPECT_NE(img.text["parameters"].find("a red sneaker at the top left"), std::string::npos);
  // An empty prompt is the unconditional model; a prompt past one 77-token
  // window is split into windows (A1111), as for any SD 1.x model.
  r = cli("generate -q --steps 2 -p \"\" -o " + tmp("fc_empty.png"));
  EXPECT_EQ(r.code, 0) << r.out;
  std::string longer;
  for (int i = 0; i < 12; ++i) longer += (i ? " and " : "") + std::string("a blue bag at the top left");
  r = cli("generate -q --steps 2 -p \"" + longer + "\" -o " + tmp("fc_long.png"));
  EXPECT_EQ(r.code, 0) << r.out;
  // Several prompts in one run, as a labelled grid.
  r = cli("generate -q --steps 2 --grid --batch-size 2 -p \"a red bag at the top left\" -p \"a cyan coat at the "
          "bottom right\" -o " + tmp("fc_grid.png"));
  ASSERT_EQ(r.code, 0) << r.out;
  Image grid = read_png(tmp("fc_grid.png"));
  EXPECT_GT(grid.width, 2 * 128);
  EXPECT_GT(grid.height, 2 * 128);
}

TEST(FashionCanvasModel, SmallSeededEvalReproducesTheCommittedNumbers) {
  if (!have_clip_vocabulary()) GTEST_SKIP() << "needs CLIP's vocabulary in ../shared/clip-tokenizer";
  const auto want = nlohmann::json::parse(read_file(source_path("models/fashion_canvas/eval_n32.json")));
  const std::string json = tmp("fc_eval.json");
  auto r = cli("eval -q -m " + kModel + " -n 32 --seed 0 --sampler dpmpp-2m --schedule karras --steps 20 --cfg 5 "
               "--batch 16 --json " + json);
  ASSERT_EQ(r.code, 0) << r.out;
  const auto got = nlohmann::json::parse(read_file(json));
  // Another CPU may round a few values differently; a judgement may flip on
  // an image at a threshold, not more.
  const auto& g = got["generated"];
  const auto& w = want["generated"];
  EXPECT_NEAR(g["image_accuracy"].get<double>(), w["image_accuracy"].get<double>(), 2.0 / 32) << r.out;
  EXPECT_NEAR(g["class_accuracy"].get<double>(), w["class_accuracy"].get<double>(), 0.05);
  EXPECT_NEAR(g["colour_accuracy"].get<double>(), w["colour_accuracy"].get<double>(), 0.05);
  EXPECT_NEAR(got["fid"].get<double>(), want["fid"].get<double>(), 0.05 * want["fid"].get<double>() + 0.5);
  // The reference (test canvases of the same prompts) involves no sampling: exact.
  EXPECT_EQ(got["reference"], want["reference"]);
}
