// Network: a denoising network (UNet, DiT, ...) as a torch module with a
// JSON architecture config. It maps the model-space input x_t (already scaled
// by the parameterization's c_in), the model time t [N] (Process::t_of) and
// the conditioning to its raw output (eps, v, x0, velocity or EDM's F, as
// the model was trained). NetDenoiser (net_denoiser.h) wraps it as a Denoiser.
#pragma once
#include <memory>
#include <string>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "tweedie/models/denoiser.h"
#include "tweedie/nn/hooks.h"

namespace tweedie {

class Network : public torch::nn::Module {
 public:
  // labels in cond: int64 [N], -1 = the learned null class (for CFG).
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const Cond& c) = 0;
  virtual std::string arch() const = 0;         // "unet", "dit", ...
  virtual std::string config_json() const = 0;  // the full config, every key explicit
  virtual std::vector<int64_t> sample_shape() const = 0;  // [C, H, W]
  virtual int64_t num_classes() const = 0;      // 0 = unconditional
  // The self-attention hook site that PAG and SAG perturb or read when none
  // is named: the middle block's ("mid.attn.0" in tweedie's UNet,
  // "middle_block.1.transformer_blocks.0.attn1" in SD's, as diffusers' PAG,
  // "blocks.<depth/2>.attn" in DiT); "" = none.
  virtual std::string default_attention_site() const { return ""; }
  // The network's hooks: sites inside it read and write through these
  // (add() / remove(), or a ScopedHook for a lifetime). Owned by the network.
  Hooks& hooks() const { return *hooks_; }

 protected:
  // A network that runs another one inside (SD's text encoder + UNet) shares
  // its hooks with it, so sites of both are one set.
  void share_hooks_with(Network& inner) { inner.hooks_ = hooks_; }
  std::shared_ptr<Hooks> hooks_ = std::make_shared<Hooks>();
};

using NetworkPtr = std::shared_ptr<Network>;

// Build a network from its architecture name and JSON config. Unknown keys,
// wrong types and impossible values are an Error naming the key.
NetworkPtr make_network(const std::string& arch, const std::string& config_json);

}  // namespace tweedie
