// Trainer: objective (which Prediction target) x weighting x timestep
// sampling x EMA over a Network, with AdamW, warm-up + cosine learning rate,
// gradient clipping, condition dropout for classifier-free guidance and
// optional bf16 autocast. Checkpoints hold everything needed to resume
// exactly (weights, EMA, optimizer moments, RNG states, data order).
//
// Config: a JSON object with only these keys (others are an Error):
//   data            "fashion-mnist" | "fashion-mnist:test" | image-folder path |
//                   "fashion-canvas" (captioned canvases, train/fashion_canvas.h; arch "sd" only)
//   vae             arch "sd": the frozen first stage (a train-autoencoder model.safetensors);
//                   the network learns scaling_factor * posterior samples of the images
//   tokenizer       arch "sd": folder with CLIP's vocab.json and merges.txt ("" = $TWEEDIE_TOKENIZER)
//   init            fine-tuning: start from this earlier model of the same architecture (a tweedie
//                   model file; arch "sd": the SD single file a previous run wrote), not at random
//   pad             pixels of padding on each side (0)
//   hflip           random horizontal flips (false)
//   arch, network   the Network (make_network) and its config object
//   process         make_process spec ("vp:cosine")
//   prediction      eps | x0 | v | velocity | edm ("v")
//   sigma_data      EDM preconditioning (0.5)
//   timestep_sampling  uniform | uniform-continuous | logit-normal | log-normal ("uniform")
//   logit_mean, logit_std, p_mean, p_std   their parameters (0, 1, -1.2, 1.2)
//   weighting       uniform | min-snr | p2 | edm ("uniform"); min_snr_gamma (5), p2_k (1), p2_gamma (1)
//   cond_dropout    probability of the null class, or for arch "sd" of the empty caption (0.1)
//   batch_size (64), steps (1000), lr (2e-4), lr_schedule ("cosine"), warmup_steps (100), min_lr (0)
//   weight_decay (0), beta1 (0.9), beta2 (0.999), adam_eps (1e-8), grad_clip (1; 0 = off)
//   ema_decay (0.999)
//   bf16            autocast the forward/backward to bfloat16 (false)
//   seed (0), threads (0 = torch default)
//   log_every (50), checkpoint_every (500), sample_every (0 = only at the end)
//   sample_steps (20), sample_cfg (3), sample_per_class (8; arch "sd": rows of 4 test-canvas captions,
//                   each row beside the real canvases)
//
// Arch "sd" (models/sd_network.h: a Stable Diffusion UNet and its CLIP text
// encoder, trained jointly from scratch) writes model.safetensors as a
// Stable Diffusion single file (LDM layout, fp16, the architecture in its
// "tweedie.sd" metadata: models/sd_export.h) holding the EMA UNet and text
// encoder and the autoencoder; the process must be discrete VP (the
// file's scheduler config) and the prediction eps or v.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tweedie/models/net_denoiser.h"
#include "tweedie/train/dataset.h"
#include "tweedie/train/objective.h"

namespace tweedie {

struct TrainConfig {
  std::string config_json;  // the config as given (normalized), stored in checkpoints
  std::string data = "fashion-mnist";
  std::string vae, tokenizer;  // arch "sd": the autoencoder file; CLIP tokenizer folder ("" = TWEEDIE_TOKENIZER)
  std::string init;            // fine-tuning: the earlier model whose weights start training
  int pad = 0;
  bool hflip = false;
  std::string arch, network_json;
  std::string process = "vp:cosine";
  Parameterization param{PredKind::V, 0.5};
  TimestepSampler timesteps;
  Weighting weighting;
  double cond_dropout = 0.1;
  int64_t batch_size = 64, steps = 1000, warmup_steps = 100;
  double lr = 2e-4, min_lr = 0, weight_decay = 0, beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8, grad_clip = 1.0;
  std::string lr_schedule = "cosine";
  double ema_decay = 0.999;
  bool bf16 = false;
  uint64_t seed = 0;
  int threads = 0;
  int64_t log_every = 50, checkpoint_every = 500, sample_every = 0;
  int sample_steps = 20, sample_per_class = 8;
  double sample_cfg = 3.0;

  static TrainConfig parse(const std::string& json_text, const std::string& where);  // Error naming key/value
  void set_steps(int64_t s);  // override the total steps (and the stored JSON)
};

struct TrainStats {
  int64_t step;         // steps completed
  int64_t total;
  double loss;          // this step's mean loss
  double lr;
  double images_per_s;  // since the start of this run
};

class Trainer {
 public:
  // out_dir receives model.safetensors (EMA weights, a complete model file),
  // checkpoint.safetensors, loss.png and sample grids. resume: continue from
  // out_dir/checkpoint.safetensors (the config must match it, except steps).
  Trainer(TrainConfig cfg, std::string out_dir, bool resume);
  ~Trainer();
  void run(const std::function<void(const TrainStats&)>& progress = {});
  // One optimizer step (batch, noise levels, forward + loss under the
  // configured autocast, backward, clipping, AdamW, EMA) without the logging,
  // checkpoints and samples of run(); returns the step's loss. run() is a loop
  // over this. Error once every configured step is done.
  double train_step();
  int64_t step() const;
  // The current EMA model as a denoiser (for tests and evaluation).
  std::shared_ptr<NetDenoiser> ema_denoiser();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tweedie
