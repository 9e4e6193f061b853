// Stable Diffusion pipelines (see include/tweedie/pipelines/stable_diffusion.h).
#include "tweedie/pipelines/stable_diffusion.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/edit/inversion.h"
#include "tweedie/edit/paired_sampling.h"
#include "tweedie/edit/sdedit.h"
#include "tweedie/guide/attend_and_excite.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/guide/guidance.h"
#include "tweedie/guide/layout_guidance.h"
#include "tweedie/guide/sega.h"
#include "tweedie/io/fs.h"
#include "tweedie/models/sd_lora.h"
#include "tweedie/nn/module_weights.h"
#include "tweedie/process/schedule.h"
#include "tweedie/restore/solver.h"
#include "tweedie/sample/generate.h"

namespace tweedie {
namespace {

ProcessPtr sd_process(const SdScheduleInfo& s, const std::string& where) {
  VPDiscreteConfig c;
  c.steps = int(s.num_train_timesteps);
  c.beta_start = s.beta_start;
  c.beta_end = s.beta_end;
  if (s.beta_schedule == "scaled_linear")
    c.betas = BetaSchedule::ScaledLinear;
  else if (s.beta_schedule == "linear")
    c.betas = BetaSchedule::Linear;
  else if (s.beta_schedule == "squaredcos_cap_v2")
    c.betas = BetaSchedule::Cosine;
  else
    fail(where, ": beta_schedule '", s.beta_schedule, "' is not supported (scaled_linear, linear, squaredcos_cap_v2)");
  c.zero_terminal_snr = s.rescale_betas_zero_snr;
  return make_vp_discrete(c);
}

std::string tokenizer_folder(const SdCheckpoint& c, const SdPipelineOptions& o) {
  if (!o.tokenizer.empty()) return o.tokenizer;
  for (auto& te : c.text_encoders)
    if (!te.tokenizer_dir.empty()) return te.tokenizer_dir;
  if (const char* env = std::getenv("TWEEDIE_TOKENIZER"); env && *env) return env;
  return o.fallback_tokenizer;
}

}  // namespace

StableDiffusion::StableDiffusion(const std::string& path, const SdPipelineOptions& opt) : opt_(opt) {
  check(opt.dtype == torch::kFloat32 || opt.dtype == torch::kBFloat16, "stable diffusion: dtype must be float32 or bfloat16");
  SdLoadOptions lo;
  lo.prediction = opt.prediction;
  lo.use_ema = opt.use_ema;
  lo.config = opt.config;
  ckpt_ = load_sd_checkpoint(path, lo);
  if (!opt.vae.empty()) {
    const double scale = ckpt_.vae_config.scaling_factor;
    ckpt_.vae = load_sd_vae(opt.vae, {}, &ckpt_.vae_config);
    ckpt_.vae_config.scaling_factor = scale;  // the latent space is the UNet's
  }

  // LoRA: merged into the state dicts before the modules are built, or
  // added to the live parameters after (removable with unmerge_loras).
  std::vector<std::pair<std::vector<LoraEntry>, double>> runtime;
  for (auto& [file, strength] : opt.loras) {
    check(std::isfinite(strength), "--lora ", file, ": strength must be finite");
    auto entries = map_lora(load_state_dict(file), lora_targets(ckpt_), file);
    if (opt.merge_loras)
      merge_lora(ckpt_, entries, strength);
    else
      runtime.emplace_back(std::move(entries), strength);
  }

  NetworkPtr unet = make_sd_unet(ckpt_.unet_config);
  load_module_weights(*unet, ckpt_.unet, ckpt_.source + " (UNet)");
  unet->eval();
  vae_ = AutoencoderKL(ckpt_.vae_config);
  load_module_weights(*vae_, ckpt_.vae, (opt.vae.empty() ? ckpt_.source : opt.vae) + " (VAE)");
  vae_->eval();
  if (!opt.taesd.empty()) {
    // taesd_decoder.pth (the decoder's Sequential indices alone), or a file
    // with both halves under encoder./decoder. (diffusers AutoencoderTiny
    // adds "layers." after them).
    taesd_ = Taesd(ckpt_.unet_config.out_channels);
    StateDict t;
    for (auto& [k, v] : load_state_dict(opt.taesd)) {
      std::string name = k;
      for (const char* half : {"encoder.layers.", "decoder.layers."})
        if (name.rfind(half, 0) == 0) name = name.substr(0, 8) + name.substr(15);
      t.emplace(name, v);
    }
    taesd_encoder_ = t.count("encoder.0.weight") > 0;
    if (taesd_encoder_)
      load_module_weights(*taesd_, t, opt.taesd + " (TAESD)");
    else
      load_module_weights(*taesd_->decoder, t, opt.taesd + " (TAESD decoder)");
    taesd_->eval();
  }

  // Text encoders with the configs and layer use the loader decided.
  std::vector<ClipTextModel> te;
  for (auto& e : ckpt_.text_encoders) {
    ClipTextModel m(e.config);
    load_clip_text_weights(m, e.weights);
    m->to(opt.dtype);
    m->eval();
    te.push_back(m);
  }
  const std::string tok_dir = tokenizer_folder(ckpt_, opt);
  if (!tok_dir.empty()) {  // without a tokenizer text encoding is refused; the UNet and VAE work
    ClipTokenizer tok(tok_dir);
    std::vector<TextEncoderSet::Encoder> encoders;
    for (size_t i = 0; i < te.size(); ++i) {
      const auto& e = ckpt_.text_encoders[i];
      const int64_t pad = e.pad_token == "<|endoftext|>" ? tok.eos() : tok.id_of(e.pad_token);
      check(pad >= 0, tok_dir, ": the padding token '", e.pad_token, "' of text encoder ", e.name,
            " is not in the vocabulary");
      encoders.push_back({te[i], pad, e.layer, e.final_norm, e.pooled});
    }
    text_ = std::make_unique<TextEncoderSet>(std::move(tok), std::move(encoders));
  }
  if (const int64_t adm = ckpt_.unet_config.adm_in_channels; adm > 0) {
    int64_t pooled = -1;
    for (auto& e : ckpt_.text_encoders)
      if (e.pooled) pooled = e.config.projection_dim;
    check(pooled > 0 && pooled + 6 * ckpt_.size_embed_dim == adm, ckpt_.source, ": the UNet's vector conditioning takes ",
          adm, " values, but the pooled text embedding (", pooled, ") + 6 size embeddings of ", ckpt_.size_embed_dim,
          " give ", pooled + 6 * ckpt_.size_embed_dim);
  }

  {
    torch::NoGradGuard ng;
    // Targets by component; the text encoders' parameters carry the HF names.
    std::map<std::string, torch::OrderedDict<std::string, torch::Tensor>> params;
    if (!runtime.empty()) {
      params["unet"] = unet->named_parameters(true);
      for (size_t i = 0; i < te.size(); ++i) params["te" + std::to_string(i + 1)] = te[i]->named_parameters(true);
    }
    for (auto& [entries, strength] : runtime)
      for (auto& e : entries) {
        auto it = params.find(e.component);
        const torch::Tensor* found = it == params.end() ? nullptr : it->second.find(e.target);
        check(found != nullptr, e.source, ": no parameter '", e.target, "' in the ", e.component);
        torch::Tensor p = *found;
        torch::Tensor d = e.delta(strength).to(p.dtype());
        p.add_(d);
        runtime_lora_.emplace_back(p, d);
      }
  }

  if (opt.dtype != torch::kFloat32) {
    cast_for_inference(*unet, opt.dtype);
    cast_for_inference(*vae_, opt.dtype);
    if (taesd_) cast_for_inference(*taesd_, opt.dtype);
  }
  Parameterization param;
  param.kind = pred_kind_from_string(ckpt_.prediction);
  denoiser_ = std::make_shared<NetDenoiser>(unet, sd_process(ckpt_.schedule, ckpt_.source), param);
}

void StableDiffusion::unmerge_loras() {
  torch::NoGradGuard ng;
  for (auto& [p, d] : runtime_lora_) p.sub_(d);
  runtime_lora_.clear();
}

int64_t StableDiffusion::latent_channels() const { return ckpt_.unet_config.out_channels; }
int64_t StableDiffusion::downscale() const { return ckpt_.vae_config.downscale(); }

Cond StableDiffusion::encode_prompt(const std::string& prompt, int64_t n, int64_t width, int64_t height,
                                    int64_t clip_skip) const {
  return encode_prompts(prompt, "", n, width, height, clip_skip).first;
}

std::vector<PromptWord> StableDiffusion::word_positions(const std::string& prompt) const {
  check(text_ != nullptr, ckpt_.source, ": no tokenizer (pass --tokenizer DIR or set TWEEDIE_TOKENIZER)");
  return prompt_word_positions(text_->tokenizer(), prompt);
}

Cond StableDiffusion::condition(const std::string& prompt, const std::string& negative, int64_t n, int64_t width,
                               int64_t height, int64_t clip_skip) const {
  return conditions({prompt}, negative, n, width, height, clip_skip)[0];
}

std::vector<Cond> StableDiffusion::conditions(const std::vector<std::string>& prompts, const std::string& negative,
                                              int64_t n, int64_t width, int64_t height, int64_t clip_skip) const {
  check(!prompts.empty(), "conditions: no prompt given");
  // Each prompt with the negative (both padded to the longer), then all padded to the longest.
  std::vector<std::pair<Cond, Cond>> pairs;
  int64_t len = 0;
  for (const auto& p : prompts) {
    pairs.push_back(encode_prompts(p, negative, n, width, height, clip_skip));
    len = std::max(len, pairs.back().first.context.size(1));
  }
  const auto& longest = *std::find_if(pairs.begin(), pairs.end(), [&](auto& q) { return q.first.context.size(1) == len; });
  const torch::Tensor null_context = longest.second.context.narrow(0, 0, 1);
  torch::Tensor null_y;
  if (longest.second.extra.count("y")) null_y = longest.second.extra.at("y").narrow(0, 0, 1);
  torch::Tensor empty;  // one 77-token window of the empty prompt, to pad with (A1111)
  std::vector<Cond> out;
  for (auto& [pos, neg] : pairs) {
    Cond c = pos;
    if (c.context.size(1) < len) {
      if (!empty.defined()) empty = encode_prompts("", "", 1, width, height, clip_skip).first.context;
      std::vector<torch::Tensor> parts{c.context};
      for (int64_t l = c.context.size(1); l < len; l += empty.size(1)) parts.push_back(empty.expand({n, -1, -1}));
      c.context = torch::cat(parts, 1);
    }
    c.extra["null_context"] = null_context;
    if (null_y.defined()) c.extra["null_y"] = null_y;
    out.push_back(std::move(c));
  }
  return out;
}

std::pair<Cond, Cond> StableDiffusion::encode_prompts(const std::string& prompt, const std::string& negative, int64_t n,
                                                      int64_t width, int64_t height, int64_t clip_skip) const {
  check(text_ != nullptr, ckpt_.source, ": the CLIP tokenizer files are not part of a single-file checkpoint; pass "
        "--tokenizer DIR (a folder with vocab.json and merges.txt, e.g. a diffusers model's tokenizer/) or set "
        "TWEEDIE_TOKENIZER");
  torch::NoGradGuard ng;
  const int64_t skip = clip_skip > 0 ? clip_skip : 1;
  TextEncoding pos = text_->encode(prompt, skip), neg = text_->encode(negative, skip);
  // Pad the shorter context with windows of the empty prompt (A1111).
  if (pos.context.size(1) != neg.context.size(1)) {
    auto empty = text_->encode("", skip).context;
    auto pad = [&](torch::Tensor c, int64_t len) {
      std::vector<torch::Tensor> parts{c};
      for (int64_t l = c.size(1); l < len; l += empty.size(1)) parts.push_back(empty);
      return torch::cat(parts, 1);
    };
    const int64_t len = std::max(pos.context.size(1), neg.context.size(1));
    pos.context = pad(pos.context, len);
    neg.context = pad(neg.context, len);
  }
  auto make = [&](const TextEncoding& e) {
    Cond c;
    c.context = e.context.to(torch::kFloat32).expand({n, -1, -1}).contiguous();
    if (ckpt_.unet_config.adm_in_channels > 0)
      c.extra["y"] = sdxl_vector_cond(e.pooled.to(torch::kFloat32), double(height), double(width), 0, 0, double(height),
                                      double(width), ckpt_.size_embed_dim)
                         .expand({n, -1})
                         .contiguous();
    return c;
  };
  return {make(pos), make(neg)};
}

torch::Tensor StableDiffusion::encode_images(const torch::Tensor& images, bool tiled) const {
  torch::NoGradGuard ng;
  check(images.dim() == 4 && images.size(1) == 3, "images to encode must be [N, 3, H, W], got ", images.sizes());
  auto x = images.to(opt_.dtype);
  if (taesd_ && taesd_encoder_) return taesd_->encode(x).to(torch::kFloat32);
  auto z = tiled ? vae_->encode_tiled(x) : vae_->encode(x);
  return z.to(torch::kFloat32) * ckpt_.vae_config.scaling_factor;
}

torch::Tensor StableDiffusion::decode_latents(const torch::Tensor& latents, bool tiled, bool clamp) const {
  torch::NoGradGuard ng;
  if (taesd_) {
    auto z = latents.to(opt_.dtype);
    return (tiled ? taesd_->decode_tiled(z) : taesd_->decode(z)).to(torch::kFloat32);
  }
  auto z = (latents / ckpt_.vae_config.scaling_factor).to(opt_.dtype);
  auto x = (tiled ? vae_->decode_tiled(z) : vae_->decode(z)).to(torch::kFloat32);
  return clamp ? x.clamp(-1, 1) : x;
}

torch::Tensor sd_generate_latents(StableDiffusion& sd, const SdRequest& req) {
  const SdUNetConfig& uc = sd.checkpoint().unet_config;
  const int64_t multiple = sd.downscale() * (int64_t(1) << (uc.channel_mult.size() - 1));
  check(req.width >= multiple && req.height >= multiple && req.width % multiple == 0 && req.height % multiple == 0,
        "image size ", req.width, "x", req.height, " must be a positive multiple of ", multiple, " for this model");
  check(req.steps >= 1, "steps must be >= 1");
  check(req.batch >= 1, "batch must be >= 1");
  check(std::isfinite(req.cfg), "cfg must be finite");
  check(req.strength >= 0 && req.strength <= 1, "strength must be in [0, 1], got ", req.strength);
  const bool has_init = req.init.defined(), has_mask = req.mask.defined();
  check(!has_mask || has_init, "a mask needs an init image (--init)");
  const bool native_inpaint = uc.in_channels == uc.out_channels + 5;
  check(!native_inpaint || has_mask, sd.checkpoint().source, " is an inpainting model: give --init and --mask");
  // InstructPix2Pix: the image's latent beside the input (guide/instruct_pix2pix.h).
  const bool instruct = uc.in_channels == 2 * uc.out_channels;
  check(!instruct || (has_init && !has_mask), sd.checkpoint().source,
        " is an InstructPix2Pix model: give --init (the image to edit) and no mask");
  if (has_init)
    check(req.init.dim() == 4 && req.init.size(1) == 3 && req.init.size(2) == req.height && req.init.size(3) == req.width &&
              (req.init.size(0) == 1 || req.init.size(0) == req.batch),
          "init image must be [1 or batch, 3, ", req.height, ", ", req.width, "], got ", req.init.sizes());
  if (has_mask)
    check(req.mask.dim() == 4 && req.mask.size(0) == 1 && req.mask.size(1) == 1 && req.mask.size(2) == req.height &&
              req.mask.size(3) == req.width,
          "mask must be [1, 1, ", req.height, ", ", req.width, "] (the init image's size), got ", req.mask.sizes());

  const int64_t n = req.batch, h = req.height / sd.downscale(), w = req.width / sd.downscale();
  const Process& proc = sd.process();
  Cond cond, neg;
  if (req.prompts.empty()) {
    std::tie(cond, neg) = sd.encode_prompts(req.prompt, req.negative, n, req.width, req.height, req.clip_skip);
  } else {
    check(int64_t(req.prompts.size()) == n, req.prompts.size(), " prompts for a batch of ", n, " images");
    auto cs = sd.conditions(req.prompts, req.negative, 1, req.width, req.height, req.clip_skip);
    std::vector<torch::Tensor> ctx, y;
    for (auto& c : cs) {
      ctx.push_back(c.context);
      if (c.extra.count("y")) y.push_back(c.extra.at("y"));
    }
    cond.context = torch::cat(ctx);
    neg.context = cs[0].extra.at("null_context").expand({n, -1, -1}).contiguous();
    if (!y.empty()) {
      cond.extra["y"] = torch::cat(y);
      neg.extra["y"] = cs[0].extra.at("null_y").expand({n, -1}).contiguous();
    }
  }

  torch::Tensor init_lat, keep;  // keep: [1, 1, h, w], 1 = latent pixel kept from the init image
  if (has_init) init_lat = sd.encode_images(req.init, req.tiled_vae).expand({n, -1, -1, -1}).contiguous();
  if (has_mask) {
    auto m = (req.mask > 0.5).to(torch::kFloat32);
    // A latent pixel is repainted if any of its image pixels is.
    keep = 1 - torch::max_pool2d(m, {sd.downscale(), sd.downscale()});
    if (native_inpaint) {
      auto masked = sd.encode_images(req.init * (1 - m), req.tiled_vae).expand({n, -1, -1, -1});
      auto mask_lat = at::upsample_nearest2d(m, {h, w});
      cond.extra["c_concat"] = torch::cat({mask_lat.expand({n, -1, -1, -1}), masked}, 1).contiguous();
      neg.extra["c_concat"] = cond.extra["c_concat"].clone();
    }
  }
  Cond image_neg;  // InstructPix2Pix: the empty prompt and the zero image
  if (instruct) {
    // The posterior mean, unscaled, as InstructPix2Pix was trained (diffusers' pipeline).
    const auto image = (init_lat / sd.checkpoint().vae_config.scaling_factor).contiguous();
    cond.extra["c_concat"] = image;
    neg.extra["c_concat"] = image.clone();
    image_neg = neg;
    image_neg.extra["c_concat"] = torch::zeros_like(image);
  }

  GuidanceOptions g = req.guidance;
  g.set("cfg", req.cfg);
  check(!g.has("negative-class"), "Stable Diffusion guides with a negative prompt, not a negative class");
  if (g.has("sega")) {  // SEGA's concepts (guide/sega.h), encoded with the prompt and padded alike
    check(req.prompts.empty(), "--sega: give one prompt for the whole batch");
    std::vector<std::string> texts{req.prompt};
    for (const SegaConcept& k : parse_sega_concepts(g.text("sega"))) texts.push_back(k.prompt);
    const auto cs = sd.conditions(texts, req.negative, n, req.width, req.height, req.clip_skip);
    if (cs[0].context.size(1) != cond.context.size(1)) {  // a concept takes more 77-token windows than the prompt
      cond.context = cs[0].context;
      neg.context = cs[0].extra.at("null_context").expand({n, -1, -1}).contiguous();
    }
    std::vector<Cond> concepts;
    for (size_t i = 1; i < cs.size(); ++i) {
      Cond k = cs[i];
      k.extra.erase("null_context");
      k.extra.erase("null_y");
      for (const auto& [key, v] : cond.extra)
        if (!k.extra.count(key)) k.extra[key] = v;  // the image latents of inpainting models
      concepts.push_back(std::move(k));
    }
    g.attach("sega-concepts", concepts);
    std::vector<std::vector<int64_t>> tokens;  // for the attention masks: every word of each concept
    for (size_t i = 1; i < texts.size(); ++i) {
      tokens.emplace_back();
      for (const PromptWord& w : sd.word_positions(texts[i]))
        tokens.back().insert(tokens.back().end(), w.positions.begin(), w.positions.end());
    }
    g.attach("sega-tokens", tokens);
  }
  g.attach("negative", std::function<Cond(const Cond&)>([neg](const Cond&) { return neg; }));
  if (instruct) {
    g.attach("image-negative", std::function<Cond(const Cond&)>([image_neg](const Cond&) { return image_neg; }));
    if (!g.has("image-cfg")) g.set("image-cfg", 1.5);  // diffusers' default
  }
  DenoiserPtr den = make_guidance(sd.denoiser(), g);
  std::vector<double> sigmas = make_schedule(req.schedule, proc, req.steps, req.schedule_options);
  const SamplerInfo& sampler = find_sampler(req.sampler);
  // Attention-loss guidance (guide/attention_loss.h): updates of the state before its steps.
  StateUpdate update;
  if (g.has("attend-excite") || g.has("layout") || req.update.fn) {
    check(req.prompts.empty() || !(g.has("attend-excite") || g.has("layout")),
          "--attend-excite and --layout act on one prompt: give one for the whole batch");
    check(!has_mask && !(has_init && req.strength < 1.0), "--attend-excite and --layout work when generating from "
          "noise (not with --init or --mask)");
    const auto words = g.has("attend-excite") || g.has("layout") ? sd.word_positions(req.prompt)
                                                                   : std::vector<PromptWord>{};
    const int steps = int(sigmas.size()) - 1;
    if (g.has("attend-excite")) {
      const int64_t last = last_text_token(words);
      check(last < 76, "--attend-excite: the prompt must fit one 77-token window");
      AttendExciteOptions o{g.number("attend-excite-scale"), g.number("attend-excite-until"),
                            int(g.number("attend-excite-refine"))};
      update = chain(update, attend_and_excite(sd.denoiser(),
                                               word_tokens(words, comma_list(g.text("attend-excite")), "attend-excite"),
                                               last, o, steps));
    }
    if (g.has("layout")) {
      const auto boxes = parse_layout(g.text("layout"));
      std::vector<std::string> names;
      for (const WordBox& b : boxes) names.push_back(b.word);
      LayoutOptions o{g.number("layout-scale"), g.number("layout-until"), int(g.number("layout-iterations")),
                      g.number("layout-threshold")};
      update = chain(update, layout_guidance(sd.denoiser(), word_tokens(words, names, "layout"), boxes, o, steps));
    }
    update = chain(update, req.update);
  }
  auto gen = at::make_generator<at::CPUGeneratorImpl>(req.seed);
  auto noise = at::randn({n, sd.latent_channels(), h, w}, gen, torch::kFloat32);

  torch::NoGradGuard ng;
  torch::Tensor latents;
  if (has_mask && !native_inpaint) {
    // Blended latent diffusion: the kept region is the init latents noised
    // to each level (restore/blended.cpp, a latent-space mask operator).
    const std::vector<double> tail = schedule_tail(sigmas, req.strength);
    check(tail.size() >= 2, "strength ", req.strength, " leaves no step to take");
    Measurement m{make_mask({sd.latent_channels(), h, w}, keep[0][0]), init_lat * keep, 0.0};
    SamplerRun run(*den, tail, cond, req.sampler_options, gen);
    int done = 0;
    run.callback = [&](const StepInfo&) {
      if (req.progress) req.progress(++done, int(tail.size()) - 1);
    };
    RestoreOptions ro;
    ro.set("sampler", req.sampler);
    const double s0 = tail[0];
    latents = run_restore(find_restore_solver("blended"), run, m, proc.add_noise(init_lat, noise, s0), ro);
  } else if (has_init && req.strength < 1.0 && !instruct) {  // InstructPix2Pix samples from noise
    SDEditOptions so;
    so.strength = req.strength;
    so.sampler = req.sampler;
    so.sampler_options = req.sampler_options;
    int done = 0;
    const int total = int(schedule_tail(sigmas, req.strength).size()) - 1;
    so.callback = [&](const StepInfo&) {
      if (req.progress) req.progress(++done, total);
    };
    latents = sdedit(*den, sigmas, init_lat, cond, so, gen);
  } else {
    GenerateOptions go;
    go.sampler = req.sampler_options;
    go.update = update.fn;
    go.update_steps = update.steps;
    go.progress = [&](int64_t done, int64_t total) {
      if (req.progress) req.progress(int(done), int(total));
    };
    latents = generate(*den, sampler, sigmas, noise, cond, go, gen).x;
  }
  return latents;
}

torch::Tensor sd_generate(StableDiffusion& sd, const SdRequest& req) {
  return sd.decode_latents(sd_generate_latents(sd, req), req.tiled_vae);
}

std::string a1111_parameters(const StableDiffusion& sd, const SdRequest& req, uint64_t seed) {
  std::ostringstream o;
  o << req.prompt << "\n";
  if (!req.negative.empty()) o << "Negative prompt: " << req.negative << "\n";
  o << "Steps: " << req.steps << ", Sampler: " << req.sampler << ", Schedule type: " << req.schedule
    << ", CFG scale: " << req.cfg << ", Seed: " << seed << ", Size: " << req.width << "x" << req.height
    << ", Model: " << std::filesystem::path(sd.checkpoint().source).filename().string();
  if (req.init.defined()) o << ", Denoising strength: " << req.strength;
  if (req.clip_skip > 1) o << ", Clip skip: " << req.clip_skip;
  GuidanceOptions g = req.guidance;
  g.set("cfg", req.cfg);
  std::ostringstream plain;
  plain << "cfg " << req.cfg;
  const std::string rules = g.describe();
  if (rules != plain.str()) o << ", Guidance: \"" << rules << "\"";  // the rules beyond plain CFG, as tweedie names them
  o << ", Version: tweedie";
  return o.str();
}

}  // namespace tweedie
