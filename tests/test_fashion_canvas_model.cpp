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
  // the last stage of its recipe (docs/fashion-canvas.md): the fine-tune from stage 2's model
  EXPECT_EQ(tr["config"], nlohmann::json::parse(read_file(source_path("configs/fashion_canvas_ft.json"))));
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

TEST(FashionCanvasModel, PromptFilesAndBenchCanvasRejectBadInputByName) {
  using tweedie::testing::expect_error;
  auto write = [](const std::string& path, const std::string& text) { std::ofstream(path) << text; };
  const std::string bad = tmp("fc_prompts_bad.txt"), one = tmp("fc_prompts_one.txt"), good = tmp("fc_prompts.txt");
  write(bad, "# judged prompts\na red bag at the top left\n\na purple bag at the top left\n");
  write(one, "a red bag at the top left\n");
  write(good, "# two prompts\r\na red bag at the top left\r\na white sandal at the bottom left and a cyan coat at "
              "the bottom right\n");
  const std::string eval = "eval -q -m " + kModel + " --steps 2 --json " + tmp("fc_prompts.json") + " --prompts ";
  expect_error(eval + bad, bad + ":4: FashionCanvas caption 'a purple bag at the top left'");
  expect_error(eval + one, one + ": FID needs at least 2 prompts, found 1");
  expect_error(eval + tmp("fc_no_such_prompts.txt"), "--prompts: cannot read");
  expect_error("bench canvas -q -n 1", "-n must be >= 2");
  expect_error("bench canvas -q --cfg 3,x", "--cfg entry 'x' is not a number");
  expect_error("bench canvas -q --cfg-at 3,5", "--cfg-at takes one scale");
  expect_error("bench canvas -q --samplers euler,nope", "unknown sampler 'nope'");
  expect_error("bench canvas -q -o " + tmp("fc_no_such_dir"), "output directory");
  if (!have_clip_vocabulary()) GTEST_SKIP() << "needs CLIP's vocabulary in ../shared/clip-tokenizer";
  // A good file (comments, blank lines and CRLF endings allowed) is judged prompt by prompt.
  auto r = cli(eval + good);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("2 prompts (" + good + ")"), std::string::npos) << r.out;
  const auto got = nlohmann::json::parse(read_file(tmp("fc_prompts.json")));
  EXPECT_EQ(got["prompts"].get<std::string>(), good);
  // The reference canvases of a file's prompts are judged like any other: exactly.
  EXPECT_GE(got["reference"]["presence_accuracy"].get<double>(), 0.99);
  // The guidance rules `generate` offers for text models apply; class-label rules are refused by name.
  r = cli(eval + good + " --freeu 1.2,1.2,0.9,0.9");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("FreeU b 1.2/1.2 s 0.9/0.9"), std::string::npos) << r.out;
  expect_error(eval + good + " --cads-noise 0.25", "--cads-noise is not available for text models");
}
