// The UNet + text encoder Network (models/sd_network.h).
#include "tweedie/models/sd_network.h"

#include <nlohmann/json.hpp>

#include "../core/config_reader.h"
#include "tweedie/core/error.h"

namespace tweedie {

SdNetworkConfig SdNetworkConfig::from_json(const std::string& text) {
  detail::ConfigReader r("sd", text);
  SdNetworkConfig c;
  const std::string unet = r.object_json("unet"), te = r.object_json("text_encoder");
  if (unet.empty()) r.bad("unet", "is required (an sd_unet config object)");
  if (te.empty()) r.bad("text_encoder", "is required (a CLIP text config object)");
  c.unet = SdUNetConfig::from_json(unet);
  c.text = ClipTextConfig::from_json(te);
  c.text_layer = r.integer("text_layer", c.text_layer, 0);
  c.final_norm = r.boolean("final_norm", c.final_norm);
  r.finish();
  if (c.text_layer > c.text.layers)
    r.bad("text_layer", "exceeds the text encoder's " + std::to_string(c.text.layers) + " layers");
  if (c.unet.context_dim != c.text.width)
    r.bad("unet", "context_dim " + std::to_string(c.unet.context_dim) + " differs from the text encoder's width " +
                      std::to_string(c.text.width));
  return c;
}

std::string SdNetworkConfig::to_json() const {
  nlohmann::json j;
  j["unet"] = nlohmann::json::parse(unet.to_json());
  j["text_encoder"] = nlohmann::json::parse(text.to_json());
  j["text_layer"] = text_layer;
  j["final_norm"] = final_norm;
  return j.dump();
}

SdNetwork::SdNetwork(const SdNetworkConfig& c) : cfg_(c) {
  unet_ = register_module("unet", make_sd_unet(c.unet));
  text_ = register_module("text", ClipTextModel(c.text));
  share_hooks_with(*unet_);
}

torch::Tensor SdNetwork::encode(const torch::Tensor& ids) {
  return text_->forward(ids, cfg_.text.layers - cfg_.layer() + 1, cfg_.final_norm).hidden;
}

torch::Tensor SdNetwork::forward(const torch::Tensor& x, const torch::Tensor& t, const Cond& c) {
  if (c.context.defined()) return unet_->forward(x, t, c);
  auto it = c.extra.find("input_ids");
  check(it != c.extra.end(), "sd network: give the prompt as extra[\"input_ids\"] (token ids) or as context");
  Cond u = c;
  u.extra.erase("input_ids");
  u.context = encode(it->second);
  return unet_->forward(x, t, u);
}

}  // namespace tweedie
