#include "edit_common.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

#include "tweedie/core/error.h"
#include "tweedie/edit/ddib.h"
#include "tweedie/edit/diffedit.h"
#include "tweedie/edit/ilvr.h"
#include "tweedie/edit/inversion.h"
#include "tweedie/edit/sdedit.h"
#include "tweedie/eval/evaluator.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/io/npy.h"
#include "tweedie/models/network_io.h"
#include "tweedie/train/dataset.h"

namespace tweedie::cli {

namespace {
void check_shape(const torch::Tensor& x, const LoadedModel& m, const std::string& what) {
  if (m.text()) {  // any size the latent model divides, RGB
    const int64_t f = m.size_multiple();
    check(x.dim() == 4 && x.size(0) >= 1, what, ": shape ", x.sizes(), " is not a batch of images [N, 3, H, W]");
    check(x.size(1) == 3, what, ": ", x.size(1), " channel(s), the model takes RGB images");
    check(x.size(2) % f == 0 && x.size(3) % f == 0, what, ": ", x.size(3), "x", x.size(2), " pixels; this model takes "
          "sizes that are multiples of ", f);
    return;
  }
  const std::vector<int64_t>& want = m.sample_shape;
  if (m.image && x.dim() == 4 && want.size() == 3) {
    check(x.size(1) == want[0], what, ": ", x.size(1), " channel(s), the model takes ", want[0],
          want[0] == 1 ? " (grayscale)" : "");
    check(x.size(2) == want[1] && x.size(3) == want[2], what, ": ", x.size(3), "x", x.size(2),
          " pixels, the model takes ", want[2], "x", want[1]);
  }
  check(x.dim() == int64_t(want.size()) + 1 && x.sizes().slice(1).vec() == want && x.size(0) >= 1, what, ": shape ",
        x.sizes(), " does not match [N, ", c10::IntArrayRef(want), "]");
}
}  // namespace

torch::Tensor load_input_images(const std::string& path, const LoadedModel& model, const std::string& cmd) {
  torch::Tensor x;
  if (ends_with(path, ".npy")) {
    x = load_npy(path).to(torch::kFloat32);
  } else if (is_directory(path)) {
    check(model.image, cmd, ": image folders need an image model");
    x = to_unit_range(load_image_folder(path).images);
  } else {
    check(ends_with(path, ".png"), cmd, ": --input must be a .png, a folder of images or a .npy, got '", path, "'");
    check(model.image, cmd, ": PNG input needs an image model");
    Image img = read_png(path);
    check(img.channels != 4, path, ": has an alpha channel; give a grayscale or RGB PNG");
    x = image_to_tensor(img).unsqueeze(0);
    if (model.text() && x.size(1) == 1) x = x.expand({-1, 3, -1, -1}).contiguous();  // gray -> RGB
  }
  check(torch::isfinite(x).all().item<bool>(), path, ": contains NaN or infinity");
  check_shape(x, model, path);
  return x;
}

TestImages fashion_mnist_test_images(int64_t n, int64_t k, const LoadedModel& model, const std::string& cmd) {
  check(n >= 1, cmd, ": --test-images must be >= 1 (got ", n, ")");
  check(model.image && model.sample_shape == std::vector<int64_t>{1, 28, 28}, cmd,
        ": --test-images gives 28x28 grayscale Fashion-MNIST images; this model takes ",
        c10::IntArrayRef(model.sample_shape));
  const Dataset test = load_fashion_mnist("test");
  auto idx = k >= 0 ? torch::nonzero(test.labels == k).flatten() : torch::arange(test.size());
  check(idx.numel() >= n, cmd, ": the test set has only ", idx.numel(), " such images (asked for ", n, ")");
  idx = idx.slice(0, 0, n);
  return {test.batch_images(idx), test.batch_labels(idx)};
}

Difference difference(const torch::Tensor& a, const torch::Tensor& b) {
  auto d = a.to(torch::kFloat64) - b.to(torch::kFloat64);
  return {d.pow(2).mean().sqrt().item<double>(), d.abs().max().item<double>()};
}

const std::vector<std::string>& edit_methods() {
  static const std::vector<std::string> m = {"sdedit", "ddib", "ddpm", "cycle", "diffedit", "ilvr"};
  return m;
}

double default_strength(const std::string& method) {
  if (method == "sdedit" || method == "diffedit") return 0.6;
  if (method == "ddpm" || method == "cycle") return 0.8;
  return 1.0;  // ddib: the whole schedule, as the paper; ilvr samples from noise
}

bool needs_source(const std::string& method) {
  return method == "ddib" || method == "ddpm" || method == "cycle" || method == "diffedit";
}

void check_edit_method(const std::string& method, const std::string& cmd) {
  const auto& m = edit_methods();
  if (std::find(m.begin(), m.end(), method) != m.end()) return;
  std::string known;
  for (auto& k : m) known += (known.empty() ? "" : ", ") + k;
  fail(cmd, ": unknown edit method '", method, "' (known: ", known, ")");
}

Cond class_condition(int64_t k, int64_t n) {
  Cond c;
  if (k >= 0) c.labels = torch::full({n}, k, torch::kInt64);
  return c;
}

EditOutput run_edit(const EditSettings& e, const LoadedModel& model, const std::vector<double>& sigmas,
                    const torch::Tensor& x, const Cond& src, const Cond& tgt, uint64_t seed) {
  check_edit_method(e.method, "edit");
  const double strength = e.strength < 0 ? default_strength(e.method) : e.strength;
  const std::string sampler = !e.sampler.empty() ? e.sampler : e.method == "ilvr" ? "ddpm" : "ddim";
  check(!needs_source(e.method) || !src.empty(), "edit: --method ", e.method, " needs the source condition");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const DenoiserPtr& base = model.denoiser;
  DenoiserPtr guided = e.cfg == 1.0 ? base : std::make_shared<CFGDenoiser>(base, e.cfg);
  EditOutput out;
  if (e.method == "sdedit") {
    out.edited = sdedit(*guided, sigmas, x, tgt, {strength, sampler, {}}, gen);
  } else if (e.method == "ddib") {
    out.edited = ddib(base, sigmas, x, src, tgt, {strength, sampler, e.cfg});
  } else if (e.method == "ddpm" || e.method == "cycle") {
    const std::vector<double> tail = schedule_tail(sigmas, strength);
    if (tail.size() < 2) {
      out.edited = x.clone();
    } else {
      InversionOptions io;
      io.cfg = e.cfg, io.eta = e.eta, io.gen = gen;
      out.edited = decode(base, invert(e.method, base, tail, x, src, io), tgt, io);
    }
  } else if (e.method == "diffedit") {
    DiffEditOptions o;
    o.strength = strength, o.mask_strength = e.mask_strength, o.mask_samples = e.mask_samples;
    o.threshold = e.mask_threshold, o.clamp_ratio = e.mask_clamp, o.sampler = sampler, o.cfg = e.cfg;
    DiffEditResult r = diffedit(base, sigmas, x, src, tgt, o, gen);
    out.edited = r.edited, out.mask = r.mask;
  } else {  // ilvr
    ILVROptions o;
    o.factor = e.factor, o.range = e.range, o.sampler = sampler;
    auto noise = at::randn(x.sizes(), gen, x.options());
    out.edited = ilvr(*guided, sigmas, noise, x, tgt, o, gen);
  }
  out.edited = out.edited.to(torch::kFloat32);
  return out;
}

torch::Tensor class_probabilities(Classifier& clf, const torch::Tensor& images) {
  torch::NoGradGuard ng;
  return torch::softmax(clf.forward(quantize_8bit(images.to(torch::kFloat32).clamp(-1, 1)), {}, {}), 1);
}

std::shared_ptr<Classifier> load_classifier(const std::string& path) {
  const std::string p = path.empty() ? default_classifier_path() : path;
  auto c = as_classifier(load_network(p), p);
  c->eval();
  return c;
}

}  // namespace tweedie::cli
