#include "model_spec.h"

#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/models/gmm.h"
#include "tweedie/models/net_denoiser.h"
#include "tweedie/train/dataset.h"

namespace tweedie::cli {

namespace {
// The analytic mixture reports its exact answer in a chosen parameterization,
// so the sampler sees it through the same conversion path as a network's.
class ReparamDenoiser : public Denoiser {
 public:
  ReparamDenoiser(DenoiserPtr d, Parameterization p) : d_(std::move(d)), p_(p) {}
  const Process& process() const override { return d_->process(); }
  Prediction predict(const torch::Tensor& x, double s, const Cond& c) override {
    return Prediction(p_, d_->predict(x, s, c).as(p_), x, s, d_->process());
  }

 private:
  DenoiserPtr d_;
  Parameterization p_;
};
}  // namespace

std::string default_model_path() {
  const char* env = std::getenv("TWEEDIE_MODEL");
  if (env && *env) return env;
  return std::string(TWEEDIE_SOURCE_DIR) + "/models/fashion_mnist.safetensors";
}

std::string default_classifier_path() {
  const char* env = std::getenv("TWEEDIE_CLASSIFIER");
  if (env && *env) return env;
  return std::string(TWEEDIE_SOURCE_DIR) + "/models/fashion_mnist_classifier.safetensors";
}

torch::Tensor class_labels(const LoadedModel& m, const std::string& spec, int64_t n) {
  check(m.num_classes > 0, "--class given but the model has no classes");
  if (spec == "all") {
    check(n > 0 && n % m.num_classes == 0, "--class all needs -n to be a multiple of the ", m.num_classes,
          " classes (one grid row per class), got -n ", n);
    return torch::arange(m.num_classes, torch::kInt64).repeat_interleave(n / m.num_classes);
  }
  std::vector<std::string> names = m.class_names;
  if (names.empty())
    for (int64_t i = 0; i < m.num_classes; ++i) names.push_back(std::to_string(i));
  return torch::full({n}, class_index(names, spec), torch::kInt64);
}

LoadedModel load_model(const std::string& spec, const std::string& process_spec, const std::string& prediction) {
  if (ends_with(spec, ".safetensors")) {
    check(process_spec.empty() && prediction.empty(), spec,
          ": --process and --prediction apply to analytic models only (a model file has its own)");
    ModelFile f = load_model_file(spec);
    LoadedModel m;
    m.denoiser = f.denoiser;
    m.sample_shape = f.denoiser->network().sample_shape();
    m.num_classes = f.denoiser->network().num_classes();
    m.class_names = f.class_names;
    m.image = true;
    m.description = spec + " (" + f.denoiser->network().arch() + ", " + f.denoiser->process().name() + ", " +
                    to_string(f.denoiser->parameterization().kind) + "-prediction)";
    return m;
  }
  if (spec.rfind("gmm:", 0) == 0) {
    auto gmm = GaussianMixture::load(spec.substr(4));
    auto proc = make_process(process_spec.empty() ? "vp" : process_spec);  // analytic default: SD's table
    LoadedModel m;
    m.sample_shape = gmm.shape;
    m.num_classes = gmm.num_classes();
    m.description = "gaussian mixture " + spec.substr(4) + " (" + std::to_string(gmm.components()) +
                    " components, dim " + std::to_string(gmm.dim()) + ") on process " + proc->name();
    DenoiserPtr d = std::make_shared<GMMDenoiser>(std::move(gmm), proc);
    if (!prediction.empty() && prediction != "x0") {
      Parameterization p{pred_kind_from_string(prediction)};
      if (p.kind == PredKind::EDM) check(proc->space() == Space::Plain, "--prediction edm needs a VP/VE/EDM process");
      d = std::make_shared<ReparamDenoiser>(d, p);
    }
    m.denoiser = d;
    return m;
  }
  fail("unknown model '", spec, "' (expected gmm:FILE.json or a .safetensors model file)");
}

}  // namespace tweedie::cli
