#include "edit_common.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

#include "tweedie/core/error.h"
#include "tweedie/edit/inversion.h"
#include "tweedie/eval/evaluator.h"
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

Cond class_condition(int64_t k, int64_t n) {
  Cond c;
  if (k >= 0) c.labels = torch::full({n}, k, torch::kInt64);
  return c;
}

EditOutput run_edit(const EditSettings& e, const LoadedModel& model, const std::vector<double>& sigmas,
                    const torch::Tensor& x, const Cond& src, const Cond& tgt, uint64_t seed, const EditWords& words) {
  EditRequest r;
  r.model = model.denoiser;
  r.sigmas = sigmas;
  r.x = x;
  r.source = src;
  r.target = tgt;
  r.strength = e.strength;
  r.cfg = e.cfg;
  r.sampler = e.sampler;
  r.options = e.options;
  r.gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  r.source_words = words.source;
  r.target_words = words.target;
  r.from_noise = words.from_noise;
  return run_edit_method(find_edit_method(e.method), std::move(r));
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
