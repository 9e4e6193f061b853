// A Stable Diffusion UNet and its CLIP text encoder as one trainable Network
// (arch "sd"), for training text-to-image models from scratch (FashionCanvas,
// docs/fashion-canvas.md) and, later, fine-tuning: the text encoder learns
// jointly with the UNet, and EMA, checkpoints and the optimizer see both.
//
// Config JSON: {"unet": SdUNetConfig JSON (models/sd_unet.h),
//               "text_encoder": ClipTextConfig JSON (models/clip_text.h),
//               "text_layer": hidden_states index fed to the UNet (0 = the
//                  last layer), "final_norm": apply final_layer_norm (true)}.
// unet.context_dim must equal text_encoder.width.
//
// forward(x, t, c): the UNet on c.context when it is given (prompts encoded
// once for sampling), else on the text encoder's hidden states of the token
// ids c.extra["input_ids"] (int64 [N, L]). Module paths: "unet.*" (LDM
// names) and "text.*" (Hugging Face CLIP names), so the parts export to an
// SD single file as they are (train/trainer.cpp).
// Verified in tests/test_fashion_canvas.cpp (FashionCanvasTraining*).
#pragma once
#include <string>

#include "tweedie/models/clip_text.h"
#include "tweedie/models/network.h"
#include "tweedie/models/sd_unet.h"

namespace tweedie {

struct SdNetworkConfig {
  SdUNetConfig unet;
  ClipTextConfig text;
  int64_t text_layer = 0;  // 0 = text.layers
  bool final_norm = true;

  static SdNetworkConfig from_json(const std::string& json);  // Error "sd config: ..."
  std::string to_json() const;
  int64_t layer() const { return text_layer > 0 ? text_layer : text.layers; }
};

class SdNetwork : public Network {
 public:
  explicit SdNetwork(const SdNetworkConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const Cond& c) override;
  std::string arch() const override { return "sd"; }
  std::string config_json() const override { return cfg_.to_json(); }
  std::vector<int64_t> sample_shape() const override { return unet_->sample_shape(); }
  int64_t num_classes() const override { return 0; }
  std::string default_attention_site() const override { return unet_->default_attention_site(); }

  // The UNet's context for token ids [N, L].
  torch::Tensor encode(const torch::Tensor& ids);
  const SdNetworkConfig& config() const { return cfg_; }
  NetworkPtr unet() const { return unet_; }
  ClipTextModel text() const { return text_; }

 private:
  SdNetworkConfig cfg_;
  NetworkPtr unet_;
  ClipTextModel text_{nullptr};
};

}  // namespace tweedie
