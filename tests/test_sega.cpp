// SEGA, semantic guidance (guide/sega.h): the guided eps against the
// formula by hand over a run (quantile mask, momentum, warm-up, cool-down,
// directions), CFG exactly when the concepts are off, one batched call, bad
// input, and `tweedie generate --sega` on a tiny Stable Diffusion folder.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "cli_testing.h"
#include "sd_testing.h"
#include "testing.h"
#include "tweedie/core/error.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/guide/guidance.h"
#include "tweedie/guide/sega.h"
#include "tweedie/models/gmm.h"
#include "tweedie/nn/hooks.h"
#include "tweedie/pipelines/stable_diffusion.h"
#include "tweedie/process/process.h"

using namespace tweedie;

namespace {

using tweedie::testing::error_of;

double max_abs(const torch::Tensor& t) { return t.abs().max().item<double>(); }

Cond labels(int64_t k, int64_t n) {
  Cond c;
  c.labels = torch::full({n}, k, torch::kInt64);
  return c;
}

// Three classes of images [2, 4, 4]: the prompt (0), two concepts (1, 2).
std::shared_ptr<GMMDenoiser> model() {
  GaussianMixture m;
  m.shape = {2, 4, 4};
  auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
  m.means = at::randn({3, 32}, gen, torch::kFloat64);
  m.variances = torch::full({3, 32}, 0.3, torch::kFloat64);
  m.weights = torch::full({3}, 1.0 / 3, torch::kFloat64);
  m.classes = {0, 1, 2};
  return std::make_shared<GMMDenoiser>(m, make_process("vp"));
}

// Records the rows of every call.
struct Counting : Denoiser {
  explicit Counting(DenoiserPtr d) : inner(std::move(d)) {}
  const Process& process() const override { return inner->process(); }
  Prediction predict(const torch::Tensor& x, double s, const Cond& c) override {
    rows.push_back(x.size(0));
    return inner->predict(x, s, c);
  }
  DenoiserPtr inner;
  std::vector<int64_t> rows;
};

TEST(SEGA, MatchesTheFormulaOverARun) {
  auto d = model();
  const int64_t n = 3;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const auto x = at::randn({n, 2, 4, 4}, gen, torch::kFloat64);
  const Cond c = labels(0, n);
  CFGOptions cfg;
  cfg.scale = 4;
  SegaOptions o;
  o.away = {false, true};
  o.scales = {2, 3};
  o.threshold = 0.6;
  o.warmup = 1;
  o.cooldown = 2;  // concepts stop at step 2; the momentum goes on
  o.momentum = 0.3;
  o.beta = 0.4;
  SegaDenoiser sega(d, cfg, o, {labels(1, n), labels(2, n)});
  const std::vector<double> levels = {2.0, 1.0, 0.5};
  torch::Tensor nu = torch::zeros_like(x);
  for (int step = 0; step < 3; ++step) {
    const double s = levels[size_t(step)];
    auto eps = [&](int64_t k) { return d->predict(x, s, k < 0 ? c.null_like() : labels(k, n)).eps(); };
    const auto eu = eps(-1), ec = eps(0);
    torch::Tensor g = torch::zeros_like(x);
    if (step < 2) {
      for (int j = 0; j < 2; ++j) {
        auto psi = (eps(j + 1) - eu) * (j == 0 ? 2.0 : -3.0);
        // the 0.6-quantile of |psi| over each sample's channel, linear interpolation between order statistics
        auto flat = psi.abs().reshape({n, 2, 16});
        auto sorted = std::get<0>(flat.sort(2));
        const double pos = 0.6 * 15;
        const int64_t lo = int64_t(pos);
        auto q = sorted.select(2, lo) + (sorted.select(2, lo + 1) - sorted.select(2, lo)) * (pos - double(lo));
        auto keep = (flat >= q.unsqueeze(2)).to(psi.dtype()).reshape(psi.sizes());
        EXPECT_NEAR(keep.mean().item<double>(), 7.0 / 16, 1e-12);  // the 7 largest of each 16 (q = the 10th)
        g = g + psi * keep;
      }
    }
    g = g + nu * 0.3;
    nu = nu * 0.4 + g * 0.6;
    auto want = eu + (ec - eu) * 4 + (step >= 1 ? g : torch::zeros_like(g));
    StepScope st(step, 3);
    EXPECT_LT(max_abs(sega.predict(x, s, c).eps() - want), 1e-10) << step;
  }
}

TEST(SEGA, IsCFGWhenTheConceptsAreOffAndAddsItsDirection) {
  auto d = model();
  const int64_t n = 2;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(6);
  const auto x = at::randn({n, 2, 4, 4}, gen, torch::kFloat64);
  const Cond c = labels(0, n);
  const double s = 0.8;
  CFGOptions cfg;
  cfg.scale = 3;
  const auto plain = CFGDenoiser(d, cfg).predict(x, s, c).eps();
  SegaOptions off;
  off.away = {false};
  off.scales = {5};
  off.cooldown = 0;
  off.momentum = 0;
  off.warmup = 0;
  {
    StepScope st(0, 10);
    EXPECT_LT(max_abs(SegaDenoiser(d, cfg, off, {labels(1, n)}).predict(x, s, c).eps() - plain), 1e-10);
  }
  // The prompt itself as the concept, everything kept (lambda 0): CFG at w + s.
  SegaOptions self = off;
  self.cooldown = INFINITY;
  self.threshold = 0;
  self.scales = {2};
  cfg.scale = 3;
  auto counting = std::make_shared<Counting>(d);
  const auto got = SegaDenoiser(counting, cfg, self, {labels(0, n)}).predict(x, s, c).eps();
  CFGOptions five;
  five.scale = 5;
  EXPECT_LT(max_abs(got - CFGDenoiser(d, five).predict(x, s, c).eps()), 1e-10);
  EXPECT_EQ(counting->rows, (std::vector<int64_t>{3 * n}));  // cond, uncond, concept in one call
  // ... and away from it: w - s.
  self.away = {true};
  CFGOptions one;
  one.scale = 1;
  EXPECT_LT(max_abs(SegaDenoiser(d, cfg, self, {labels(0, n)}).predict(x, s, c).eps() -
                    CFGDenoiser(d, one).predict(x, s, c).eps()),
            1e-10);
}

TEST(SEGA, BadInput) {
  EXPECT_EQ(parse_sega_concepts("a hat| -glasses").size(), 2u);
  EXPECT_TRUE(parse_sega_concepts("a hat| -glasses")[1].away);
  EXPECT_EQ(parse_sega_concepts("a hat| -glasses")[1].prompt, "glasses");
  const std::string msg = "--sega: empty concept in 'a||b' (concepts are prompts separated by |, '-' to steer away)";
  EXPECT_EQ(error_of([] { parse_sega_concepts("a||b"); }), msg);
  EXPECT_NE(error_of([] { parse_sega_concepts("a|"); }).find("empty concept"), std::string::npos);
  EXPECT_NE(error_of([] { parse_sega_concepts("-"); }).find("empty concept"), std::string::npos);
  auto d = model();
  GuidanceOptions g(3);
  g.set("sega", "a hat");
  EXPECT_EQ(error_of([&] { make_guidance(d, g); }), "--sega needs a text model: its concepts are prompts");
  g.attach("sega-concepts", std::vector<Cond>{labels(1, 1)});
  g.set("sega-scale", "1,2");
  EXPECT_EQ(error_of([&] { make_guidance(d, g); }), "--sega-scale: give one scale or one per concept (1), got 2");
  g.set("sega-scale", "2");
  EXPECT_EQ(g.describe(), "cfg 3, SEGA 'a hat' scale 2");
  g.set("pag", 1.0);
  EXPECT_EQ(error_of([&] { make_guidance(d, g); }), "--pag and --sega both replace cfg; give one");
}

TEST(SEGACLI, GenerateTakesConceptPromptsOnTextModelsOnly) {
  const std::string dir = tweedie::testing::tiny_sd_folder("sega_model", 41);
  const std::string out = ::testing::TempDir() + "/sega.png";
  const std::string base = "generate -m " + dir + " -p \"a red coat\" -s 3 -W 16 -H 16 -q --seed 2 -o " + out;
  auto plain = tweedie::testing::cli(base);
  ASSERT_EQ(plain.code, 0) << plain.out;
  auto r = tweedie::testing::cli(base + " --sega \"a hat|-a blue coat\" --sega-warmup 0 --sega-scale 4,2");
  ASSERT_EQ(r.code, 0) << r.out;
  tweedie::testing::expect_error(base + " --sega \"a hat||\"", "--sega: empty concept");
  tweedie::testing::expect_error("sample --sega hat -n 1 -o " + out, "unknown option '--sega'");
  // The library: the concepts change the image, and at scale 0 with no momentum they do not.
  StableDiffusion sd(dir);
  SdRequest req;
  req.prompt = "a red coat";
  req.width = req.height = 16;
  req.steps = 3;
  req.cfg = 3;
  const auto a = sd_generate_latents(sd, req);
  req.guidance.set("sega", "a hat").set("sega-scale", "0").set("sega-momentum", 0.0);
  EXPECT_LT(max_abs(sd_generate_latents(sd, req) - a), 1e-4);
  req.guidance.set("sega-scale", "6").set("sega-warmup", 0.0).set("sega-threshold", 0.5);
  EXPECT_GT(max_abs(sd_generate_latents(sd, req) - a), 1e-3);
}

}  // namespace
