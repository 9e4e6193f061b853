// CLIP text transformer (Radford et al. 2021) as Stable Diffusion uses it:
// OpenAI CLIP ViT-L/14 (SD1, SDXL's first encoder), OpenCLIP ViT-H/14 (SD2)
// and OpenCLIP ViT-bigG/14 (SDXL's second encoder).
//
//   x = token_embedding(ids) + position_embedding(0..L-1)
//   per layer (pre-LN): x += out_proj(MHA(LN1(x)), causal mask)
//                       x += fc2(act(fc1(LN2(x))))
//   act = quick_gelu (x * sigmoid(1.702 x), CLIP-L) or gelu (erf, OpenCLIP)
//   hidden_states[i] = x after i layers (hidden_states[0] = the embeddings)
//   pooled = final_layer_norm(x after all layers)[EOS position] @ text_projection
// with the EOS position = argmax of the token ids (the EOS id 49407 is the
// largest, so the first EOS), as HF CLIPTextModel and OpenCLIP do.
// Attention: q k^T / sqrt(head_dim) + causal mask, softmax in float32.
//
// Which hidden states each family feeds the UNet:
//   SD1 (LDM FrozenCLIPEmbedder; A1111): last_hidden_state =
//       final_layer_norm(hidden_states[-1]); with A1111's clip skip n > 1,
//       final_layer_norm(hidden_states[-n]).
//   SD2 (LDM FrozenOpenCLIPEmbedder, layer "penultimate"): the resblocks run
//       up to, not including, the last one (hidden_states[-2] of the 24-layer
//       model), THEN ln_final. Diffusers' SD2 text_encoder keeps 23 layers,
//       and its last_hidden_state is the same thing.
//   SDXL (SGM FrozenCLIPEmbedder layer "hidden", layer_idx 11, and
//       FrozenOpenCLIPEmbedder2 layer "penultimate", legacy False; diffusers'
//       hidden_states[-2]): hidden_states[-2] of both encoders WITHOUT the
//       final layer norm, concatenated along features (768 + 1280 = 2048);
//       pooled (bigG) = ln_final(hidden_states[-1])[EOS] @ text_projection.
// TextEncoderSet below applies these rules.
//
// Parameter names are Hugging Face transformers' (CLIPTextModel /
// CLIPTextModelWithProjection), so a state dict loads by name:
//   text_model.embeddings.{token_embedding,position_embedding}.weight
//   text_model.encoder.layers.N.self_attn.{q,k,v,out}_proj.{weight,bias}
//   text_model.encoder.layers.N.{layer_norm1,layer_norm2}.{weight,bias}
//   text_model.encoder.layers.N.mlp.{fc1,fc2}.{weight,bias}
//   text_model.final_layer_norm.{weight,bias}
//   text_projection.weight  (optional, bias-free, [projection_dim, width])
// ("text_model.embeddings.position_ids", an int buffer some files carry, is
// accepted and ignored.) openclip_to_hf converts OpenCLIP's layout.
//
// Verified in tests/test_clip_text.cpp: a float64 hand computation of a
// layer, causality, pooled = EOS row, HF layout == OpenCLIP layout after
// conversion, config inference, load errors naming keys and shapes, bf16 vs
// fp32, emphasis and chunk concatenation.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

#include "tweedie/io/state_dict.h"
#include "tweedie/models/clip_tokenizer.h"
#include "tweedie/models/prompt_weighting.h"

namespace tweedie {

struct ClipTextConfig {
  int64_t vocab_size = 49408, width = 768, layers = 12, heads = 12, intermediate = 3072, max_positions = 77;
  int64_t projection_dim = 0;             // 0: no text_projection
  std::string activation = "quick_gelu";  // "quick_gelu" | "gelu"
  double layer_norm_eps = 1e-5;

  static ClipTextConfig clip_l();         // 768 wide, 12 layers, 12 heads, quick_gelu, projection 768
  static ClipTextConfig openclip_h();     // 1024, 24, 16, gelu, projection 1024
  static ClipTextConfig openclip_bigg();  // 1280, 32, 20, gelu, projection 1280
  void validate() const;                  // Error "clip text config: ..."
  // Every field by name (vocab_size, width, layers, heads, intermediate,
  // max_positions, projection_dim, activation, layer_norm_eps); from_json
  // starts from clip_l's values and validates.
  static ClipTextConfig from_json(const std::string& text);
  std::string to_json() const;
  std::string describe() const;           // "width 768, 12 layers, 12 heads, quick_gelu"
};

// The config of the HF-layout tensors under `prefix` (from their shapes:
// width and vocabulary from the token embedding, positions, layer count,
// intermediate size, projection), heads = width / head_dim. activation ""
// picks quick_gelu for width 768 (OpenAI CLIP-L) and gelu otherwise
// (OpenCLIP H and bigG). Error naming the missing key or the bad shape.
ClipTextConfig infer_clip_text_config(const StateDict& sd, const std::string& prefix = "",
                                      const std::string& activation = "", int64_t head_dim = 64);

// OpenCLIP text tower -> HF names. Keys under src_prefix (e.g.
// "cond_stage_model.model." for SD2, "conditioner.embedders.1.model." for
// SDXL) are renamed under dst_prefix: token_embedding.weight,
// positional_embedding -> embeddings; transformer.resblocks.N.{ln_1, ln_2,
// attn.out_proj, mlp.c_fc, mlp.c_proj} -> layer_norm1, layer_norm2,
// self_attn.out_proj, mlp.fc1, mlp.fc2; attn.in_proj_{weight,bias} [3W, ...]
// split into q/k/v; ln_final -> final_layer_norm; text_projection [W, P]
// (used as x @ P) -> text_projection.weight = P^T. logit_scale is dropped;
// other keys under src_prefix keep their suffix (so loading reports them);
// keys outside src_prefix are copied unchanged. Tensors are shared, except
// the split and transposed ones (contiguous copies).
StateDict openclip_to_hf(const StateDict& sd, const std::string& src_prefix, const std::string& dst_prefix);
// The inverse, for writing LDM/SGM single files: HF names (no prefix) ->
// OpenCLIP names (q/k/v joined into attn.in_proj_*, text_projection
// transposed); position_ids dropped; any other key is an Error naming it.
StateDict hf_to_openclip(const StateDict& sd);
// True if keys under prefix are in OpenCLIP's layout (transformer.resblocks.*).
bool is_openclip_layout(const StateDict& sd, const std::string& prefix);
// True if keys under prefix are HF names without "text_model." (embeddings.*,
// encoder.*, final_layer_norm.*), as some SD1 checkpoints saved by older
// transformers have them (A1111 renames them the same way).
bool is_legacy_hf_layout(const StateDict& sd, const std::string& prefix);

struct ClipTextOutput {
  torch::Tensor hidden;  // [B, L, width], the chosen hidden states
  torch::Tensor pooled;  // [B, projection_dim] (or [B, width] without projection); undefined unless asked
};

class ClipEncoderLayerImpl : public torch::nn::Module {
 public:
  explicit ClipEncoderLayerImpl(const ClipTextConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& causal_mask);

  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr}, fc1{nullptr}, fc2{nullptr};
  torch::nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};

 private:
  int64_t heads_;
  bool quick_gelu_;
};
TORCH_MODULE(ClipEncoderLayer);

class ClipTextModelImpl : public torch::nn::Module {
 public:
  explicit ClipTextModelImpl(const ClipTextConfig& c);

  // ids [B, L] (L <= max_positions), any integer type, on any device.
  // clip_skip n: hidden = hidden_states[-n] (1 = last layer, 2 = penultimate,
  // up to `layers`); final_norm applies final_layer_norm to it; pooled also
  // runs the remaining layers for the pooled output.
  ClipTextOutput forward(const torch::Tensor& ids, int64_t clip_skip = 1, bool final_norm = true, bool pooled = false);

  const ClipTextConfig& config() const { return cfg_; }
  torch::ScalarType dtype() const;
  torch::Device device() const;

  torch::nn::Embedding token_embedding{nullptr}, position_embedding{nullptr};
  torch::nn::ModuleList layers{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};
  torch::nn::Linear text_projection{nullptr};  // null without projection

 private:
  ClipTextConfig cfg_;
};
TORCH_MODULE(ClipTextModel);

// Copy the tensors under `prefix` (HF layout) into the model
// (nn/module_weights.h): every parameter must be present with its shape and
// nothing else may be there (besides text_model.embeddings.position_ids);
// otherwise one Error names the prefix, the config and a few missing /
// unexpected / mis-shaped keys. Dtypes are converted to the model's.
void load_clip_text_weights(ClipTextModel& model, const StateDict& sd, const std::string& prefix = "");
// Build and load in one step: the layout is detected (OpenCLIP is converted,
// the legacy layout renamed),
// the config inferred (activation "" = by family: OpenCLIP layout -> gelu,
// HF layout -> as infer_clip_text_config), the weights converted once to
// dtype and moved to device. Returned in eval mode.
ClipTextModel load_clip_text(const StateDict& sd, const std::string& prefix, const std::string& activation = "",
                             torch::ScalarType dtype = torch::kFloat32, torch::Device device = torch::kCPU,
                             int64_t head_dim = 64);

struct TextEncoding {
  torch::Tensor context;  // [1, 77k, D]
  torch::Tensor pooled;   // [1, P] from the first chunk, undefined unless asked
};

// Encode prompt windows with one encoder: each chunk's hidden states
// (clip_skip, final_norm as in forward), emphasis applied per chunk
// (apply_emphasis), concatenated along the sequence; pooled from chunk 0
// (before emphasis). Runs without gradient.
TextEncoding encode_windows(ClipTextModel& model, const PromptWindows& windows, int64_t clip_skip, bool final_norm,
                            bool pooled = false, bool emphasis_normalize = true);

// The text side of a Stable Diffusion model: tokenizer + encoder(s), each
// with its padding, layer and normalization (see the top of this file; the
// checkpoint loader decides them from the model's form and config,
// models/sd_checkpoint.h). clip_skip 1 is each encoder's own layer; n > 1
// goes n - 1 layers further back (for SD1 this is A1111's "Clip skip").
class TextEncoderSet {
 public:
  struct Encoder {
    ClipTextModel model{nullptr};
    int64_t pad_id;   // padding token id of the 77-token windows
    int64_t layer;    // hidden_states index (1..layers) used at clip skip 1
    bool final_norm;  // final_layer_norm applied to it
    bool pooled;      // its pooled projection is returned (SDXL's second encoder)
  };
  // Contexts are concatenated along features in encoder order; at most one pools.
  TextEncoderSet(ClipTokenizer tok, std::vector<Encoder> encoders);

  // The released families' rules: SD1 the last layer + final norm (pad EOS);
  // SD2 the penultimate layer of OpenCLIP-H + final norm (pad 0), or the last
  // when the encoder already stops there (diffusers' 23-layer copy:
  // truncated = true); SDXL hidden_states[-2] of both without the final norm,
  // pooled from the second (CLIP-L pads EOS, bigG 0).
  static TextEncoderSet sd1(ClipTokenizer tok, ClipTextModel clip_l);
  static TextEncoderSet sd2(ClipTokenizer tok, ClipTextModel openclip_h, bool truncated = false);
  static TextEncoderSet sdxl(ClipTokenizer tok, ClipTextModel clip_l, ClipTextModel openclip_bigg);

  // context [1, 77k, sum of widths]; pooled [1, P] when an encoder pools.
  TextEncoding encode(const std::string& prompt, int64_t clip_skip = 1, const ChunkOptions& opt = {}) const;

  const ClipTokenizer& tokenizer() const { return tok_; }
  const std::vector<Encoder>& encoders() const { return encoders_; }
  int64_t context_dim() const;

 private:
  ClipTokenizer tok_;
  std::vector<Encoder> encoders_;
};

}  // namespace tweedie
