// Training an AutoencoderKL (models/autoencoder_kl.h), the first stage of a
// latent diffusion model (Rombach et al. 2022, LDM's AutoencoderKL with its
// KL-regularized loss, without the adversarial and perceptual terms):
//
//   loss = mean |x - D(z)| + kl_weight * KL(q(z|x) || N(0, I)) / (C H W)
//
// with z a sample of the encoder's diagonal Gaussian q(z|x) and the KL
// summed over latent elements; per pixel, this is LDM's summed loss divided
// by C H W, so kl_weight means what LDM's does (1e-6). "loss": "l2" uses the
// squared error instead. AdamW, warm-up + cosine learning rate, gradient
// clipping; checkpoints resume bit-identically.
//
// Config: a JSON object with only these keys (others are an Error):
//   data ("fashion-canvas"), test_data ("fashion-canvas:test"): FashionCanvas
//     (train/fashion_canvas.h) or any dataset load_dataset reads;
//   vae: AutoencoderKL config object (required; in_channels / out_ch must
//     match the data); kl_weight (1e-6), loss ("l1" | "l2");
//   logvar_init (absent = the layer's default initialization): the initial
//     bias of the log-variance half of the encoder's last layer (quant_conv,
//     or encoder.conv_out without it). With kl_weight 1e-6 the posterior
//     ends almost deterministic, but from log-variance 0 Adam needs thousands
//     of steps to get there while the decoder only sees unit noise; -8 starts
//     near where it ends (std 0.02);
//   init (""): an autoencoder model file (model.safetensors of an earlier
//     run, same architecture) to start from instead of a fresh
//     initialization: fine-tuning, e.g. with another loss, as SD's VAE was
//     fine-tuned toward MSE; logvar_init is then not applied;
//   crop (0 = whole images): train on one crop x crop tile of each image,
//     drawn uniformly from the image's aligned tiles (FashionCanvas: crop 32
//     is one cell, a quarter of the compute; the network is convolutional
//     and is evaluated on whole images). Caveat, measured: GroupNorm's
//     statistics are per image, so a model trained on one-item tiles
//     mis-colours whole canvases (yellow items came back magenta, test PSNR
//     24.6 dB); fine-tune on whole images after (init below);
//   batch_size (32), steps (2000), lr (1e-3), min_lr (1e-5), warmup_steps (100),
//   weight_decay (0), grad_clip (1), seed (0), threads (0),
//   log_every (25), checkpoint_every (250), eval_images (256).
//
// out_dir receives model.safetensors (the autoencoder in LDM first-stage
// names, its config with the measured scaling_factor in the
// "tweedie.autoencoder_kl" metadata entry, the measured test PSNR in
// "tweedie.training"), checkpoint.safetensors (resume state), loss.png and
// reconstructions.png (test images over their reconstructions).
//
// scaling_factor = 1 / std of the latents (posterior samples) of the test
// images, as LDM chooses it, so the diffusion model sees unit-variance latents.
// Verified in tests/test_fashion_canvas.cpp (a short run learns, resumes
// bit-identically, bad configs rejected).
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "tweedie/models/autoencoder_kl.h"
#include "tweedie/train/trainer.h"

namespace tweedie {

struct AutoencoderTrainConfig {
  std::string config_json;
  std::string data = "fashion-canvas", test_data = "fashion-canvas:test";
  AutoencoderKLConfig vae;
  double kl_weight = 1e-6;
  std::optional<double> logvar_init;
  std::string init;
  int64_t crop = 0;
  std::string loss = "l1";
  int64_t batch_size = 32, steps = 2000, warmup_steps = 100;
  double lr = 1e-3, min_lr = 1e-5, weight_decay = 0, grad_clip = 1;
  uint64_t seed = 0;
  int threads = 0;
  int64_t log_every = 25, checkpoint_every = 250, eval_images = 256;

  static AutoencoderTrainConfig parse(const std::string& json_text, const std::string& where);
  void set_steps(int64_t s);
};

struct AutoencoderEval {
  double psnr = 0;            // mean over the test images, 8-bit quantized reconstructions of the posterior mean
  double latent_std = 0;      // std of posterior samples
  double scaling_factor = 0;  // 1 / latent_std
};

class AutoencoderTrainer {
 public:
  AutoencoderTrainer(AutoencoderTrainConfig cfg, std::string out_dir, bool resume);
  ~AutoencoderTrainer();
  void run(const std::function<void(const TrainStats&)>& progress = {});
  double train_step();
  int64_t step() const;
  AutoencoderEval evaluate();  // on eval_images test images (the first of the test set or canvas seed 0)
  AutoencoderKL model() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A trained autoencoder file (model.safetensors above): weights and config,
// scaling factor included. Error naming the file if it is not one.
AutoencoderKL load_autoencoder_file(const std::string& path);

// Training images as uint8 [N, C, H, W]: FashionCanvas ("fashion-canvas",
// "fashion-canvas:test"; canvas `first + i` of `seed`) or a dataset in the
// order of a DataOrder (resumable through its state). Shared by the trainers.
class ImageSource {
 public:
  ImageSource(const std::string& spec, uint64_t seed);
  ~ImageSource();
  // The next n images (and their canonical or varied captions for canvases;
  // empty for datasets) after `consumed` images have been handed out.
  torch::Tensor images(int64_t consumed, int64_t n, std::vector<std::string>* captions = nullptr,
                       bool vary_captions = true) const;
  std::vector<int64_t> image_shape() const;  // [C, H, W]
  bool is_canvas() const;
  const Dataset* dataset() const;  // null for canvases
 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tweedie
