// Inversion and editing (src/edit/): exact reconstructions, the closed-form
// endpoints of each edit, masks on a mixture whose classes differ in known
// coordinates, edits judged by the shipped classifier on the default model,
// and the CLI's rejections.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cstdio>

#include "cli_testing.h"
#include "testing.h"
#include "tweedie/edit/ddib.h"
#include "tweedie/edit/diffedit.h"
#include "tweedie/edit/edit_method.h"
#include "tweedie/edit/ilvr.h"
#include "tweedie/edit/inversion.h"
#include "tweedie/edit/sdedit.h"
#include "tweedie/eval/evaluator.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/io/image.h"
#include "tweedie/io/npy.h"
#include "tweedie/models/classifier.h"
#include "tweedie/models/net_denoiser.h"
#include "tweedie/models/network_io.h"
#include "tweedie/train/dataset.h"

namespace tweedie {
namespace {

using testing::error_of;
using testing::source_path;

torch::Generator seeded(uint64_t s) { return at::make_generator<at::CPUGeneratorImpl>(s); }

double rmse(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).pow(2).mean().sqrt().item<double>();
}

Cond labels(int64_t n, int64_t k) {
  Cond c;
  c.labels = torch::full({n}, k, torch::kInt64);
  return c;
}

// The shipped model, loaded once.
const DenoiserPtr& fmnist() {
  static DenoiserPtr d = load_model_file(source_path("models/fashion_mnist.safetensors")).denoiser;
  return d;
}
const Dataset& fmnist_test() {
  static Dataset d = load_fashion_mnist("test");
  return d;
}
// The first n test images of class k, in [-1, 1].
torch::Tensor test_images(int64_t k, int64_t n) {
  auto idx = torch::nonzero(fmnist_test().labels == k).flatten().slice(0, 0, n);
  return fmnist_test().batch_images(idx);
}
std::vector<double> fmnist_schedule(int steps) { return make_schedule("karras", fmnist()->process(), steps); }

// A class-labelled mixture of the given sample shape, one class per component.
std::shared_ptr<GMMDenoiser> mixture(std::vector<int64_t> shape, torch::Tensor means, double var,
                                     const std::string& process = "vp:cosine") {
  GaussianMixture m;
  m.shape = std::move(shape);
  const int64_t k = means.size(0);
  m.means = means.to(torch::kFloat64);
  m.variances = torch::full_like(m.means, var);
  m.weights = torch::full({k}, 1.0 / double(k), torch::kFloat64);
  for (int64_t i = 0; i < k; ++i) m.classes.push_back(i);
  return std::make_shared<GMMDenoiser>(std::move(m), make_process(process));
}

// ---- inversions ---------------------------------------------------------------

TEST(InversionExact, EdictAndFixedPointOnTheMixture) {
  auto d = std::make_shared<GMMDenoiser>(testing::test_mixture(), make_process("vp:cosine"));
  auto x = d->mixture().sample(32, seeded(0), 1).to(torch::kFloat64);
  const Cond c = labels(32, 1);
  const auto sig = make_schedule("karras", d->process(), 20);
  for (double w : {1.0, 3.0}) {
    InversionOptions o;
    o.cfg = w;
    const double ddim = rmse(decode(d, invert("ddim", d, sig, x, c, o), c, o), x);
    Inversion e = invert("edict", d, sig, x, c, o);
    const double err = rmse(decode(d, e, c, o), x);
    std::printf("mixture w=%g edict rmse %.3g (ddim %.3g), nfe %d\n", w, err, ddim, e.nfe);
    EXPECT_LT(err, 1e-9) << w;
    EXPECT_GT(ddim, 1e-3) << w;
  }
  InversionOptions o;  // fixed-point: at w = 1 every step is a contraction
  Inversion f = invert("fixed-point", d, sig, x, c, o);
  EXPECT_LT(rmse(decode(d, f, c, o), x), 1e-5);
  for (double r : f.residuals) EXPECT_LT(r, o.tol);
  EXPECT_EQ(int(f.iterations.size()), 19);
}

TEST(InversionExact, FixedPointAndersonBeatsPlainIteration) {
  auto d = std::make_shared<GMMDenoiser>(testing::test_mixture(), make_process("vp:cosine"));
  auto x = d->mixture().sample(16, seeded(1)).to(torch::kFloat64);
  const auto sig = make_schedule("karras", d->process(), 10);
  InversionOptions o;
  o.tol = 1e-10;
  o.max_iter = 200;
  auto anderson = invert("fixed-point", d, sig, x, {}, o);
  o.anderson = 0;
  auto plain = invert("fixed-point", d, sig, x, {}, o);
  int a = 0, p = 0;
  for (int i : anderson.iterations) a += i;
  for (int i : plain.iterations) p += i;
  std::printf("fixed-point iterations: anderson %d, plain %d\n", a, p);
  EXPECT_LT(2 * a, p);
  EXPECT_LT(rmse(decode(d, anderson, {}, o), x), 1e-9);
}

TEST(InversionExact, DefaultModelEdictAndDDPM) {
  auto x = test_images(7, 2).to(torch::kFloat64);  // sneakers
  const Cond c = labels(2, 7);
  const auto sig = fmnist_schedule(10);
  InversionOptions o;
  o.cfg = 3;
  o.gen = seeded(0);
  for (const char* m : {"edict", "ddpm", "cycle"}) {
    Inversion inv = invert(m, fmnist(), sig, x, c, o);
    const double err = rmse(decode(fmnist(), inv, c, o), x);
    std::printf("default model cfg 3 %-6s rmse %.3g, nfe %d\n", m, err, inv.nfe);
    EXPECT_LT(err, 1e-6) << m;
  }
}

TEST(InversionDDIM, ErrorGrowsWithGuidance) {
  auto x = test_images(7, 2).to(torch::kFloat64);
  const Cond c = labels(2, 7);
  const auto sig = fmnist_schedule(10);
  std::vector<double> errs;
  for (double w : {1.0, 3.0, 7.0}) {
    InversionOptions o;
    o.cfg = w;
    errs.push_back(rmse(decode(fmnist(), invert("ddim", fmnist(), sig, x, c, o), c, o), x));
    std::printf("ddim inversion cfg %g: rmse %.4g\n", w, errs.back());
  }
  EXPECT_LT(errs[0], errs[1]);
  EXPECT_LT(errs[1], errs[2]);
  InversionOptions o;
  o.cfg = 3;
  const double np_err = rmse(decode(fmnist(), invert("negative-prompt", fmnist(), sig, x, c, o), c, o), x);
  std::printf("negative-prompt cfg 3: rmse %.4g\n", np_err);
  EXPECT_NEAR(np_err, errs[0], 1e-6);  // the guidance term vanishes: the w = 1 round trip
}

TEST(InversionNullText, BeatsDDIMInversionAtCFG3) {
  auto x = test_images(7, 2).to(torch::kFloat64);
  const Cond c = labels(2, 7);
  const auto sig = fmnist_schedule(10);
  InversionOptions o;
  o.cfg = 3;
  o.inner_steps = 6;
  const double ddim = rmse(decode(fmnist(), invert("ddim", fmnist(), sig, x, c, o), c, o), x);
  Inversion nt = invert("null-text", fmnist(), sig, x, c, o);
  const double err = rmse(decode(fmnist(), nt, c, o), x);
  std::printf("cfg 3: null-text rmse %.4g (%d nfe), ddim %.4g\n", err, nt.nfe, ddim);
  EXPECT_LT(3 * err, ddim);
  ASSERT_EQ(int(nt.null_embeddings.size()), 9);
  EXPECT_GT((nt.null_embeddings[8] - nt.null_embeddings[0]).abs().max().item<double>(), 1e-3);  // per-step embeddings
}

// ---- edits on the Gaussian mixture ----------------------------------------------

TEST(EditSDEdit, StrengthEndpointsAndRange) {
  auto d = std::make_shared<GMMDenoiser>(testing::test_mixture(), make_process("vp:cosine"));
  auto x = d->mixture().sample(64, seeded(0), 0).to(torch::kFloat64);
  const Cond tgt = labels(64, 1);
  const auto sig = make_schedule("karras", d->process(), 10);
  EXPECT_TRUE(torch::equal(sdedit(*d, sig, x, tgt, {0.0, "ddim", {}}, seeded(1)), x));  // strength 0: the input
  // Strength 1 is sampling from the same noise (the data's share at s_max is negligible).
  auto edited = sdedit(*d, sig, x, tgt, {1.0, "ddim", {}}, seeded(2));
  auto gen = seeded(2);
  auto z = at::randn(x.sizes(), gen, x.options());
  SamplerRun run(*d, sig, tgt, {}, gen);
  auto sampled = run_sampler(find_sampler("ddim"), run, z * sig[0]);
  EXPECT_LT(rmse(edited, sampled), 0.02);
  EXPECT_GT(rmse(edited, sdedit(*d, sig, x, tgt, {1.0, "ddim", {}}, seeded(3))), 0.1);  // other noise, other samples
  // Strength 0.5 runs the last half of the schedule: it starts from a(s) x + s z at sigmas[5].
  auto half = sdedit(*d, sig, x, tgt, {0.5, "euler", {}}, seeded(4));
  auto gen4 = seeded(4);
  auto z4 = at::randn(x.sizes(), gen4, x.options());
  std::vector<double> tail(sig.begin() + 5, sig.end());
  SamplerRun run4(*d, tail, tgt, {}, gen4);
  EXPECT_TRUE(torch::allclose(half, run_sampler(find_sampler("euler"), run4, x + z4 * sig[5]), 1e-12, 1e-12));
  for (double bad : {-0.1, 1.5, double(NAN)})
    EXPECT_NE(error_of([&] { sdedit(*d, sig, x, tgt, {bad, "ddim", {}}, seeded(1)); }).find("strength must be in [0, 1]"),
              std::string::npos) << bad;
}

TEST(EditDDIB, SameClassIsTheInversionRoundTripOtherClassTranslates) {
  auto d = std::make_shared<GMMDenoiser>(testing::test_mixture(), make_process("vp:cosine"));
  auto x = d->mixture().sample(64, seeded(0), 1).to(torch::kFloat64);
  const Cond c1 = labels(64, 1), c0 = labels(64, 0);
  const auto sig = make_schedule("karras", d->process(), 100);
  auto same = ddib(d, sig, x, c1, c1, {});
  EXPECT_TRUE(torch::allclose(same, decode(d, invert("ddim", d, sig, x, c1), c1), 0, 1e-12));
  EXPECT_LT(rmse(same, x), 0.05);  // DDIM inversion's own error at 100 steps
  // Class 1 (two components) -> class 0 (one component at (1, 0.5)): every sample lands near class 0's mean.
  auto moved = ddib(d, sig, x, c1, c0, {});
  auto dist = (moved - torch::tensor({1.0, 0.5}, torch::kFloat64)).norm(2, 1);
  EXPECT_LT(dist.max().item<double>(), 1.5);
  EXPECT_LT(dist.mean().item<double>(), 0.5);
  EXPECT_GT((x - torch::tensor({1.0, 0.5}, torch::kFloat64)).norm(2, 1).mean().item<double>(), 1.5);
  EXPECT_TRUE(torch::equal(ddib(d, sig, x, c1, c0, {0.0, "ddim", 1.0}), x));  // strength 0
}

TEST(EditILVR, FullResolutionReferenceIsReproducedLowPassFollowsIt) {
  auto gen = seeded(0);
  auto d = mixture({1, 4, 4}, at::randn({3, 16}, gen, torch::kFloat64), 0.1);
  auto y = d->mixture().sample(32, seeded(1)).to(torch::kFloat64);
  auto noise = at::randn(y.sizes(), gen, y.options());
  const auto sig = make_schedule("karras", d->process(), 30);
  ILVROptions o;
  o.factor = 1;
  EXPECT_LT(rmse(ilvr(*d, sig, noise, y, {}, o, seeded(2)), y), 1e-9);  // N = 1: the reference itself
  o.factor = 2;
  auto out = ilvr(*d, sig, noise, y, {}, o, seeded(2));
  SamplerRun run(*d, sig, {}, {}, seeded(2));
  auto plain = run_sampler(find_sampler("ddpm"), run, noise * sig[0]);
  auto low = [](const torch::Tensor& v) { return torch::avg_pool2d(v, {2, 2}); };
  const double e_ilvr = rmse(low(out), low(y)), e_plain = rmse(low(plain), low(y));
  std::printf("ilvr N=2: low-pass rmse %.3g vs %.3g unconditioned\n", e_ilvr, e_plain);
  EXPECT_LT(e_ilvr, 1e-9);  // the last step replaces the low-pass image by the reference's
  EXPECT_GT(rmse(out, y), 0.05);  // ... while the details are the model's own
  EXPECT_GT(e_plain, 0.3);
  o.range = 0.8;  // conditioning stops early: low frequencies close to the reference's, no longer equal
  const double e_part = rmse(low(ilvr(*d, sig, noise, y, {}, o, seeded(2))), low(y));
  std::printf("ilvr N=2, range 0.8: low-pass rmse %.3g\n", e_part);
  EXPECT_GT(e_part, 1e-6);
  EXPECT_LT(e_part, e_plain / 2);
}

TEST(EditDiffEdit, MaskSelectsTheCoordinatesWhereTheClassesDiffer) {
  auto means = torch::zeros({2, 8}, torch::kFloat64);
  for (int64_t i : {1, 4, 6}) means[1][i] = 2.5;
  auto d = mixture({8}, means, 0.3);
  auto x = d->mixture().sample(16, seeded(0), 0).to(torch::kFloat64);
  const Cond src = labels(16, 0), tgt = labels(16, 1);
  DiffEditOptions o;
  o.mask_samples = 4;
  auto want = torch::zeros({16, 8}, torch::kFloat64);
  for (int64_t i : {1, 4, 6}) want.select(1, i).fill_(1);
  EXPECT_TRUE(torch::equal(diffedit_mask(*d, x, src, tgt, o, seeded(1)), want));
  {
    // One class mean differs in 7 of 16 coordinates, one of them 4x more than the others. The noise
    // estimates differ in proportion to the means (one isotropic component per class), so the
    // normalised difference is 1 at the extreme coordinate and 2.5 / (3 * 25 / 16) = 0.53 > 0.5 at the
    // other six: all 7 are masked (a min-max rescaling would give 0.25 there and keep only one).
    auto m2 = torch::zeros({2, 16}, torch::kFloat64);
    m2[1][0] = 10;
    for (int64_t i : {2, 3, 5, 9, 12, 15}) m2[1][i] = 2.5;
    auto d2 = mixture({16}, m2, 0.3);
    auto x2 = d2->mixture().sample(8, seeded(2), 0).to(torch::kFloat64);
    auto want2 = (m2[1] != 0).to(torch::kFloat64).expand({8, 16});
    EXPECT_TRUE(torch::equal(diffedit_mask(*d2, x2, labels(8, 0), labels(8, 1), o, seeded(3)), want2));
    o.clamp_ratio = 2;  // the six now sit at 2.5 / (2 * 25 / 16) = 0.8; at ratio 4, 0.4: out
    EXPECT_TRUE(torch::equal(diffedit_mask(*d2, x2, labels(8, 0), labels(8, 1), o, seeded(3)), want2));
    o.clamp_ratio = 4;
    auto only0 = torch::zeros({8, 16}, torch::kFloat64);
    only0.select(1, 0).fill_(1);
    EXPECT_TRUE(torch::equal(diffedit_mask(*d2, x2, labels(8, 0), labels(8, 1), o, seeded(3)), only0));
    o.clamp_ratio = 0;
    EXPECT_THROW(diffedit_mask(*d2, x2, labels(8, 0), labels(8, 1), o, seeded(3)), Error);
    o.clamp_ratio = 3;
  }
  const auto sig = make_schedule("karras", d->process(), 20);
  o.strength = 0.8;
  DiffEditResult r = diffedit(d, sig, x, src, tgt, o, seeded(1));
  EXPECT_LT((r.edited - x).mul(1 - want).abs().max().item<double>(), 1e-12);  // outside the mask: the input
  const double before = (x * want).sum().item<double>() / want.sum().item<double>();
  const double after = (r.edited * want).sum().item<double>() / want.sum().item<double>();
  std::printf("diffedit: masked coordinates' mean %.3f -> %.3f (target 2.5)\n", before, after);
  EXPECT_GT(after - before, 1.0);
}

// ---- edits on the default model, judged by the classifier ----------------------

// The registered edit methods run what their files register: the registry
// path equals the direct call, defaults come from the registration, and bad
// settings are refused by name.
TEST(EditMethods, RegistryRunsTheMethodsWithTheirDeclaredDefaults) {
  std::vector<std::string> names;
  for (const EditMethodInfo& m : edit_methods()) names.push_back(m.name);
  EXPECT_EQ(names, (std::vector<std::string>{"cycle", "ddib", "ddpm", "diffedit", "ilvr", "ledits", "masactrl", "p2p", "pnp", "sdedit"}));
  auto d = std::make_shared<GMMDenoiser>(testing::test_mixture(), make_process("vp:cosine"));
  auto x = d->mixture().sample(16, seeded(0), 1).to(torch::kFloat64);
  const Cond c1 = labels(16, 1), c0 = labels(16, 0);
  const auto sig = make_schedule("karras", d->process(), 20);
  auto request = [&](double strength, uint64_t seed) {
    EditRequest r;
    r.model = d, r.sigmas = sig, r.x = x, r.source = c1, r.target = c0, r.strength = strength, r.cfg = 1.0;
    r.gen = seeded(seed);
    return r;
  };
  // sdedit: default strength 0.6, ddim
  const EditMethodInfo& sd = find_edit_method("sdedit");
  EXPECT_EQ(sd.default_strength, 0.6);
  EXPECT_TRUE(torch::allclose(run_edit_method(sd, request(-1, 3)).edited,
                              sdedit(*d, sig, x, c0, {0.6, "ddim", {}}, seeded(3)).to(torch::kFloat32)));
  // ddib: the whole schedule, an invertible sampler both ways
  EXPECT_TRUE(torch::allclose(run_edit_method(find_edit_method("ddib"), request(-1, 0)).edited,
                              ddib(d, sig, x, c1, c0, {}).to(torch::kFloat32)));
  // ddpm: the last 0.8 of the schedule inverted under the source, its noises decoded under the target
  InversionOptions io;
  io.gen = seeded(5);
  const auto tail = schedule_tail(sig, 0.8);
  EXPECT_TRUE(torch::allclose(run_edit_method(find_edit_method("ddpm"), request(-1, 5)).edited,
                              decode(d, invert("ddpm", d, tail, x, c1, io), c0, io).to(torch::kFloat32)));
  // diffedit with a set option equals DiffEditOptions with that field
  EditRequest r = request(0.5, 7);
  r.options = find_edit_method("diffedit").values("test");
  r.options.set("mask-threshold", 0.3);
  DiffEditOptions o;
  o.strength = 0.5, o.threshold = 0.3;
  const EditResult got = run_edit_method(find_edit_method("diffedit"), r);
  const DiffEditResult want = diffedit(d, sig, x, c1, c0, o, seeded(7));
  EXPECT_TRUE(torch::allclose(got.edited, want.edited.to(torch::kFloat32)));
  EXPECT_TRUE(torch::equal(got.mask, want.mask));
  // refused by name
  EXPECT_EQ(error_of([&] { r.options.set("mask-threshold", 1.0); }),
            "test --method diffedit: --mask-threshold must be in [0, 1) (got 1)");
  EXPECT_EQ(error_of([&] { r.options.set("eta", 0.5); }), "test --method diffedit: --eta does not apply");
  EditRequest nosrc = request(-1, 0);
  nosrc.source = Cond{};
  EXPECT_EQ(error_of([&] { run_edit_method(find_edit_method("ddib"), nosrc); }), "edit ddib needs the source condition");
  // Prompt-to-Prompt acts on prompts' words; only it generates its source from noise
  EXPECT_EQ(error_of([&] { run_edit_method(find_edit_method("p2p"), request(-1, 0)); }),
            "edit p2p needs a text model and prompts");
  EditRequest noise = request(-1, 0);
  noise.from_noise = true;
  EXPECT_EQ(error_of([&] { run_edit_method(find_edit_method("sdedit"), noise); }),
            "edit sdedit edits images: give it an input (it cannot generate its source from a seed)");
  EditRequest euler_a = request(-1, 0);
  euler_a.sampler = "euler-a";
  EXPECT_NE(error_of([&] { run_edit_method(find_edit_method("diffedit"), euler_a); }).find("cannot invert"),
            std::string::npos);
  EXPECT_EQ(error_of([] { find_edit_method("nope"); }).rfind("unknown edit method 'nope' (known: cycle, ddib", 0), 0u);
}

TEST(EditDefaultModel, EditsRaiseTheTargetClassProbability) {
  auto clf = as_classifier(load_network(source_path("models/fashion_mnist_classifier.safetensors")), "classifier");
  clf->eval();
  auto prob = [&](const torch::Tensor& v, int64_t k) {
    torch::NoGradGuard ng;
    return torch::softmax(clf->forward(quantize_8bit(v.to(torch::kFloat32).clamp(-1, 1)), {}, {}), 1).select(1, k);
  };
  const int64_t sneaker = 7, sandal = 5;
  auto x = test_images(sneaker, 4);
  const Cond src = labels(4, sneaker), tgt = labels(4, sandal);
  const auto sig = fmnist_schedule(10);
  torch::NoGradGuard ng;
  CFGDenoiser guided(fmnist(), 3.0);
  InversionOptions io;
  io.cfg = 3, io.gen = seeded(0);
  const auto tail = schedule_tail(sig, 0.8);
  std::vector<std::pair<std::string, torch::Tensor>> edits = {
      {"sdedit", sdedit(guided, sig, x, tgt, {0.6, "ddim", {}}, seeded(0))},
      {"ddpm", decode(fmnist(), invert("ddpm", fmnist(), tail, x, src, io), tgt, io)},
  };
  const double p0 = prob(x, sandal).mean().item<double>();
  for (auto& [name, y] : edits) {
    auto p = prob(y, sandal);
    std::printf("%s sneaker -> sandal: mean p(sandal) %.3f -> %.3f, rmse to source %.3f\n", name.c_str(), p0,
                p.mean().item<double>(), rmse(y, x));
    EXPECT_GT(p.mean().item<double>(), p0 + 0.4) << name;
    EXPECT_GE((p > 0.5).sum().item<int64_t>(), 3) << name;
    EXPECT_LT(rmse(y, x), 0.8) << name;  // an edit, not a new image
  }
}

// ---- CLI ----------------------------------------------------------------------

TEST(EditCLI, EditsAndInvertsTestImages) {
  using namespace testing;
  const std::string out = tmp("edit_grid.png");
  std::remove(out.c_str());
  Result r = cli("edit --method sdedit --test-images 2 --from sneaker --to sandal --steps 4 -q -o " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("edited images classified as sandal"), std::string::npos) << r.out;
  Image grid = read_png(out);
  EXPECT_EQ(grid.height, make_grid(torch::zeros({4, 1, 28, 28}), 2).height);  // rows: source, edited
  EXPECT_EQ(grid.width, make_grid(torch::zeros({4, 1, 28, 28}), 2).width);
  const std::string data = tmp("edit_mix.npy"), latent = tmp("edit_latent.npy");
  auto m = GaussianMixture::load(source_path("models/gmm/mix64.json"));
  save_npy(data, m.sample(8, seeded(0), 1));
  r = cli("invert -m gmm:models/gmm/mix64.json --method edict --class 1 --cfg 3 --steps 10 -q -i " + data + " -o " + latent);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(load_npy(latent).sizes(), torch::IntArrayRef({8, 64}));
  const auto pos = r.out.find("RMSE ");
  ASSERT_NE(pos, std::string::npos) << r.out;
  EXPECT_LT(std::stod(r.out.substr(pos + 5)), 1e-4) << r.out;
}

TEST(EditCLI, BadInputGetsOneClearError) {
  using namespace testing;
  const std::string out = tmp("edit_never.png");
  std::remove(out.c_str());
  const std::string imgs = "--test-images 2 --from sneaker --to sandal -o " + out;
  expect_error("edit --method nope " + imgs, "unknown edit method 'nope'", out);
  expect_error("edit --method sdedit --strength 1.5 " + imgs, "--strength must be in [0, 1]", out);
  expect_error("edit --method sdedit --strength -0.2 " + imgs, "--strength must be in [0, 1]", out);
  expect_error("edit --method ddib --to sandal -i x.png -o " + out, "--method ddib needs --from", out);
  expect_error("edit --method sdedit --to sandal --test-images 2 -o " + out, "--test-images needs --from", out);
  expect_error("edit --method sdedit --from sneaker " + std::string("--test-images 2 -o ") + out, "--to is required", out);
  expect_error("edit --method sdedit --to nope --test-images 2 --from sneaker -o " + out, "unknown class 'nope'", out);
  expect_error("edit --method ddib --sampler euler-a " + imgs, "cannot invert", out);
  expect_error("edit --method sdedit --factor 2 " + imgs, "tweedie edit: --factor applies to ilvr only, not sdedit", out);
  const std::string big = tmp("edit_32.png"), rgb = tmp("edit_rgb.png");
  write_png(big, Image(32, 32, 1, 128));
  write_png(rgb, Image(28, 28, 3, 128));
  expect_error("edit --method sdedit --to sandal -i " + big + " -o " + out, "32x32 pixels, the model takes 28x28", out);
  expect_error("edit --method sdedit --to sandal -i " + rgb + " -o " + out, "3 channel(s), the model takes 1", out);
  expect_error("invert --method nope --test-images 1", "unknown inversion method 'nope'");
  expect_error("invert --method ddim --edict-p 0.9 --test-images 1", "--edict-p applies to --method edict");
  expect_error("invert --method edict --edict-p 1.5 --test-images 1 --class 0 --steps 3", "mixing weight p must be in (0, 1]");
  expect_error("invert --method null-text --test-images 1 --steps 3", "needs a real source class");
}

}  // namespace
}  // namespace tweedie
