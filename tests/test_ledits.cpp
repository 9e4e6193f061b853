// LEDITS++ (edit/ledits_pp.h) and SEGA's attention masks (guide/sega.h) on a
// tiny Stable Diffusion folder: at concept scale 0 the edit gives the image
// back (edit-friendly DDPM inversion decoded by the inversion's own model);
// the masked direction is zero outside the cells where the concept's tokens
// attend most; `tweedie edit --method ledits`; bad input.
#include <gtest/gtest.h>

#include "cli_testing.h"
#include "sd_testing.h"
#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/edit/edit_method.h"
#include "tweedie/edit/ledits_pp.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/guide/sega.h"
#include "tweedie/nn/hooks.h"
#include "tweedie/pipelines/stable_diffusion.h"
#include "tweedie/process/schedule.h"

using namespace tweedie;
using tweedie::testing::error_of;

namespace {

const std::string& model_dir() {
  static const std::string dir = tweedie::testing::tiny_sd_folder("ledits_model", 47);
  return dir;
}

StableDiffusion& pipeline() {
  static StableDiffusion sd(model_dir());
  return sd;
}

EditRequest request(double scale, const std::string& mask) {
  StableDiffusion& sd = pipeline();
  EditRequest r;
  r.model = sd.denoiser();
  r.sigmas = make_schedule("karras", sd.process(), 8);
  torch::manual_seed(5);
  r.x = torch::randn({2, 4, 8, 8});
  const auto c = sd.conditions({"a red coat", "a blue coat"}, "", 2, 16, 16);
  r.source = c[0], r.target = c[1];
  r.source_words = sd.word_positions("a red coat");
  r.target_words = sd.word_positions("a blue coat");
  r.cfg = 3;
  r.strength = 0.85;
  r.gen = at::make_generator<at::CPUGeneratorImpl>(6);
  OptionValues v;
  v.set("ledits-scale", scale).set("ledits-mask", mask);
  r.options = v.values_for(find_edit_method("ledits").options, "ledits");
  return r;
}

TEST(LEDITS, AtScaleZeroTheImageComesBack) {
  torch::NoGradGuard ng;
  const EditRequest r = request(0, "intersect");
  const auto back = ledits_pp(r).edited;
  EXPECT_LT((back - r.x.to(torch::kFloat32)).abs().max().item<double>(), 1e-3);
  const auto edited = ledits_pp(request(8, "intersect")).edited;
  EXPECT_GT((edited - r.x.to(torch::kFloat32)).abs().max().item<double>(), 1e-2);
}

TEST(LEDITS, TheMaskedDirectionActsOnlyWhereTheConceptAttends) {
  StableDiffusion& sd = pipeline();
  auto net = sd.denoiser();
  const int64_t n = 1;
  const auto c = sd.conditions({"a red coat", "a blue coat"}, "", n, 16, 16);
  const auto words = sd.word_positions("a blue coat");
  const std::vector<int64_t> blue = words[1].positions;
  // Every cross-attention map: the concept's word "blue" attends only to the first query (top-left).
  ScopedHook focus(net->network().hooks(), "*attn2.probs", [&](const std::string&, const torch::Tensor& p, const HookContext&) {
    auto out = p.clone();
    for (int64_t t : blue) {
      out.select(2, t).zero_();
      out.select(2, t).select(1, 0).fill_(1);
    }
    return out;
  });
  torch::manual_seed(7);
  const auto x = torch::randn({n, 4, 8, 8}) * 2;
  const double s = 2;
  CFGOptions cfg;
  cfg.scale = 3;
  SegaOptions o;
  o.away = {false};
  o.scales = {4};
  o.warmup = 0;
  o.momentum = 0;
  o.threshold = 0.9;
  o.mask = SegaMask::Attention;
  o.tokens = {blue};
  torch::NoGradGuard ng;
  const auto plain = CFGDenoiser(net, cfg).predict(x, s, c[0]).eps();
  const auto got = SegaDenoiser(net, cfg, o, {c[1]}, net).predict(x, s, c[0]).eps();
  const auto diff = (got - plain).abs().sum(1);  // [n, 8, 8]
  // The 4 x 4 maps' quarter-side layer: a peak at map cell (0, 0) smoothed -> its 3 x 3 neighbourhood is largest; the
  // 0.9-quantile of 16 keeps the top 2 cells, (0, 0) and one neighbour; outside those latent 2 x 2 blocks, no change.
  auto outside = torch::ones({8, 8});
  outside.slice(0, 0, 4).slice(1, 0, 4).zero_();
  EXPECT_LT((diff[0] * outside).max().item<double>(), 1e-5);
  EXPECT_GT(diff[0].slice(0, 0, 2).slice(1, 0, 2).max().item<double>(), 1e-4);
  EXPECT_EQ(error_of([] { parse_sega_mask("box", "sega-mask"); }),
            "--sega-mask: unknown mask 'box' (channel, attention, intersect)");
}

TEST(LEDITSCLI, EditsAnImageAndRefusesAClassModel) {
  const std::string img = ::testing::TempDir() + "/ledits_in.png", out = ::testing::TempDir() + "/ledits_out.png";
  auto g = tweedie::testing::cli("generate -m " + model_dir() + " -p \"a red coat\" -s 3 -W 16 -H 16 -q -o " + img);
  ASSERT_EQ(g.code, 0) << g.out;
  const std::string base = "edit -m " + model_dir() + " --method ledits -i " + img +
                           " --source-prompt \"a red coat\" --target-prompt \"a blue coat\" -s 6 -q -o " + out;
  auto r = tweedie::testing::cli(base + " --ledits-scale 0");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("latents 0.00"), std::string::npos) << r.out;
  auto e = tweedie::testing::cli(base + " --ledits-mask attention");
  ASSERT_EQ(e.code, 0) << e.out;
  tweedie::testing::expect_error(base + " --ledits-mask box", "--ledits-mask: unknown mask 'box'");
  tweedie::testing::expect_error("edit --method ledits --to sandal --from sneaker --test-images 1 -o " + out,
                                 "edits by prompts' words and needs a text model");
}

}  // namespace
