// Turning a --model argument into a Denoiser.
#pragma once
#include <string>

#include "cli.h"
#include "tweedie/models/denoiser.h"
#include "tweedie/pipelines/stable_diffusion.h"
#include "tweedie/process/prediction.h"

namespace tweedie::cli {

struct LoadedModel {
  DenoiserPtr denoiser;
  std::vector<int64_t> sample_shape;  // per-sample shape in the sampling space (latents for text models)
  int64_t num_classes = 0;
  std::vector<std::string> class_names;
  bool image = false;  // samples are images in [-1, 1] ([C, H, W])
  std::string description;
  // Text-conditioned latent models (Stable Diffusion format): the pipeline
  // holding the VAE and text encoders; null for tweedie's own and analytic models.
  std::shared_ptr<StableDiffusion> sd;

  bool text() const { return sd != nullptr; }
  // Images [N, C, H, W] in [-1, 1] <-> states of the sampling space: the
  // VAE's scaled latents for text models, the images themselves otherwise.
  torch::Tensor encode(const torch::Tensor& images) const;
  torch::Tensor decode(const torch::Tensor& x) const;
  // The per-image shape [C, H, W] the model reads and writes at its native size.
  std::vector<int64_t> image_shape() const;
  // Image sizes (pixels) must be multiples of this (1 for pixel models).
  int64_t size_multiple() const;
  // The condition of n samples for a prompt (text models; the negative
  // prompt is its unconditional counterpart) at an image size.
  Cond prompt_condition(const std::string& prompt, const std::string& negative, int64_t n, int64_t height,
                        int64_t width) const;
  // Several prompts' conditions that batch together (StableDiffusion::conditions).
  std::vector<Cond> prompt_conditions(const std::vector<std::string>& prompts, const std::string& negative, int64_t n,
                                      int64_t height, int64_t width) const;
};

// How text models are loaded: the common flags --tokenizer, --config,
// --bf16 (text_model_opts) and --prediction.
struct TextModelOptions {
  std::string tokenizer, config, prediction;
  bool bf16 = false;
};
std::vector<Args::Opt> text_model_opts();
TextModelOptions text_model_options(const Args& a);

// A Stable Diffusion checkpoint (diffusers folder, or a weights file that is
// not a tweedie network: .ckpt/.pt/.pth/.bin or .safetensors without
// tweedie's network metadata).
bool is_text_model(const std::string& spec);

// The model `tweedie sample` uses when no --model is given.
std::string default_model_path();

// The text-to-image model `tweedie generate` uses when no --model is given
// ($TWEEDIE_TEXT_MODEL or models/fashion_canvas.safetensors).
std::string default_text_model_path();

// CLIP's tokenizer files for single-file models when neither --tokenizer nor
// $TWEEDIE_TOKENIZER gives them: ../shared/clip-tokenizer beside the
// checkout if it exists, else "".
std::string default_tokenizer_dir();
// default_tokenizer_dir() for the shipped FashionCanvas model, "" for any
// other: a user's own single file still asks for its tokenizer.
std::string default_tokenizer_for(const std::string& model);

// The evaluation classifier `tweedie eval` uses when no --classifier is given
// ($TWEEDIE_CLASSIFIER or models/fashion_mnist_classifier.safetensors).
std::string default_classifier_path();

// "gmm:FILE.json" (an exact Gaussian-mixture denoiser; process_spec and
// prediction choose its process and the parameterization it reports in) or a
// tweedie model file (.safetensors; its process and parameterization are its
// own, and giving either option is an error).
// A text model (is_text_model) loads with `text`; its prediction comes from
// text.prediction (or the checkpoint), not `prediction`.
LoadedModel load_model(const std::string& spec, const std::string& process_spec, const std::string& prediction,
                       const TextModelOptions& text = {});

// Class labels for --class: a name, an index, or "all" (each class `per` times).
torch::Tensor class_labels(const LoadedModel& m, const std::string& spec, int64_t n);

}  // namespace tweedie::cli
