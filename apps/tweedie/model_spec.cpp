#include "model_spec.h"

#include <filesystem>
#include <fstream>

#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/safetensors.h"
#include "tweedie/io/state_dict.h"
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

std::string default_text_model_path() {
  const char* env = std::getenv("TWEEDIE_TEXT_MODEL");
  if (env && *env) return env;
  return std::string(TWEEDIE_SOURCE_DIR) + "/models/fashion_canvas.safetensors";
}

std::string default_tokenizer_dir() {
  const std::string shared = std::string(TWEEDIE_SOURCE_DIR) + "/../shared/clip-tokenizer";
  return std::ifstream(shared + "/vocab.json").good() ? shared : "";
}

std::string default_tokenizer_for(const std::string& model) {
  std::error_code a, b;
  const auto p = std::filesystem::weakly_canonical(model, a);
  const auto d = std::filesystem::weakly_canonical(std::string(TWEEDIE_SOURCE_DIR) + "/models/fashion_canvas.safetensors", b);
  return !a && !b && p == d ? default_tokenizer_dir() : "";
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

bool is_text_model(const std::string& spec) {
  if (is_directory(spec)) return std::ifstream(spec + "/model_index.json").good();
  if (!std::ifstream(spec).good()) return false;
  switch (detect_weights_format(spec)) {
    case WeightsFormat::TorchZip:
    case WeightsFormat::TorchLegacy: return true;
    case WeightsFormat::Safetensors: return load_safetensors(spec).metadata.count("tweedie.arch") == 0;
    case WeightsFormat::Unknown: return false;
  }
  return false;
}

std::vector<Args::Opt> text_model_opts() {
  return {{"tokenizer", "", false, "text models: folder with vocab.json + merges.txt (single files; or $TWEEDIE_TOKENIZER)", ""},
          {"config", "", false, "text models (single files): the architecture as an LDM/SGM .yaml or a tweedie .json", ""},
          {"bf16", "", true, "text models: run the networks in bfloat16", ""}};
}

TextModelOptions text_model_options(const Args& a) {
  TextModelOptions t;
  t.tokenizer = a.str("tokenizer");
  t.config = a.str("config");
  t.bf16 = a.has("bf16");
  return t;
}

torch::Tensor LoadedModel::encode(const torch::Tensor& images) const {
  return sd ? sd->encode_images(images.to(torch::kFloat32)) : images;
}

torch::Tensor LoadedModel::decode(const torch::Tensor& x) const {
  return sd ? sd->decode_latents(x.to(torch::kFloat32)) : x;
}

std::vector<int64_t> LoadedModel::image_shape() const {
  if (!sd) return sample_shape;
  return {3, sample_shape[1] * sd->downscale(), sample_shape[2] * sd->downscale()};
}

int64_t LoadedModel::size_multiple() const {
  if (!sd) return 1;
  return sd->downscale() * (int64_t(1) << (sd->checkpoint().unet_config.channel_mult.size() - 1));
}

Cond LoadedModel::prompt_condition(const std::string& prompt, const std::string& negative, int64_t n, int64_t height,
                                   int64_t width) const {
  check(sd != nullptr, "prompts need a text-conditioned model");
  return sd->condition(prompt, negative, n, width, height);
}

std::vector<Cond> LoadedModel::prompt_conditions(const std::vector<std::string>& prompts, const std::string& negative,
                                                int64_t n, int64_t height, int64_t width) const {
  check(sd != nullptr, "prompts need a text-conditioned model");
  return sd->conditions(prompts, negative, n, width, height);
}

LoadedModel load_model(const std::string& spec, const std::string& process_spec, const std::string& prediction,
                       const TextModelOptions& text) {
  if (is_text_model(spec)) {
    check(process_spec.empty(), spec, ": --process applies to analytic models only (a text model has its own)");
    SdPipelineOptions po;
    po.tokenizer = text.tokenizer;
    po.fallback_tokenizer = default_tokenizer_for(spec);
    po.config = text.config;
    po.prediction = !text.prediction.empty() ? text.prediction : prediction;
    po.dtype = text.bf16 ? torch::kBFloat16 : torch::kFloat32;
    LoadedModel m;
    m.sd = std::make_shared<StableDiffusion>(spec, po);
    m.denoiser = m.sd->denoiser();
    const SdUNetConfig& u = m.sd->checkpoint().unet_config;
    m.sample_shape = {u.out_channels, u.height, u.width};
    m.image = true;
    m.description = spec + " (" + m.sd->checkpoint().describe() + ")";
    return m;
  }
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
  fail("unknown model '", spec, "' (expected gmm:FILE.json, a .safetensors model file, or a Stable Diffusion "
       "checkpoint: a single file or a diffusers folder)");
}

}  // namespace tweedie::cli
