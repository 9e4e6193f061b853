// The training loop (see trainer.h): data -> noise level -> noisy input ->
// network -> weighted loss in the chosen parameterization -> AdamW, EMA.
// Verified in tests/test_trainer.cpp: the loss falls on a small dataset, a
// run resumed from a checkpoint ends bit-identical to an uninterrupted one,
// bad configs are rejected, and the written model file samples.
#include "tweedie/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>

#include <mutex>
#include <cmath>
#include <nlohmann/json.hpp>

#include "../core/config_reader.h"
#include "train_log.h"
#include "tweedie/core/error.h"
#include "tweedie/core/runtime.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/io/plot.h"
#include "tweedie/io/safetensors.h"
#include "tweedie/models/clip_tokenizer.h"
#include "tweedie/models/network_io.h"
#include "tweedie/models/prompt_weighting.h"
#include "tweedie/models/sd_checkpoint.h"
#include "tweedie/models/sd_export.h"
#include "tweedie/models/sd_network.h"
#include "tweedie/nn/module_weights.h"
#include "tweedie/train/autoencoder_training.h"
#include "tweedie/train/fashion_canvas.h"
#include "tweedie/process/schedule.h"
#include "tweedie/sample/sampler.h"
#include "tweedie/train/adamw.h"
#include "tweedie/train/ema.h"
#include "tweedie/train/lr_schedule.h"

namespace tweedie {

using json = nlohmann::json;

namespace {

// The Stable Diffusion scheduler config of a discrete VP process spec (what a
// trained "sd" model file states about its noise schedule).
SdScheduleInfo sd_schedule_of(const std::string& spec) {
  SdScheduleInfo s;
  std::string base = spec;
  const auto plus = base.find("+ztsnr");
  if (plus != std::string::npos) s.rescale_betas_zero_snr = true, base.erase(plus);
  if (base == "vp" || base == "vp:scaled_linear") {
    s.beta_schedule = "scaled_linear", s.beta_start = 0.00085, s.beta_end = 0.012;
  } else if (base == "vp:linear") {
    s.beta_schedule = "linear", s.beta_start = 1e-4, s.beta_end = 0.02;
  } else if (base == "vp:cosine") {
    s.beta_schedule = "squaredcos_cap_v2";
  } else {
    fail("process '", spec, "': arch 'sd' needs a discrete VP process (vp, vp:linear, vp:cosine, +ztsnr)");
  }
  s.timestep_spacing = "trailing";
  return s;
}

}  // namespace

TrainConfig TrainConfig::parse(const std::string& text, const std::string& where) {
  if (text.empty()) fail(where, ": malformed JSON (the file is empty)");
  detail::ConfigReader r(where, text, detail::ConfigReader::Style::WhyThenValue);
  TrainConfig c;
  c.data = r.string("data", c.data);
  c.vae = r.string("vae", c.vae);
  c.tokenizer = r.string("tokenizer", c.tokenizer);
  c.init = r.string("init", c.init);
  c.pad = int(r.integer("pad", c.pad, 0));
  c.hflip = r.boolean("hflip", c.hflip);
  c.arch = r.string("arch", c.arch);
  c.network_json = r.object_json("network");
  c.process = r.string("process", c.process);
  c.param.kind = r.parsed("prediction", c.param.kind, pred_kind_from_string);
  c.param.sigma_data = r.positive("sigma_data", c.param.sigma_data);
  c.timesteps.kind = r.parsed("timestep_sampling", c.timesteps.kind, timestep_sampling_from_string);
  c.timesteps.logit_mean = r.number("logit_mean", c.timesteps.logit_mean);
  c.timesteps.logit_std = r.positive("logit_std", c.timesteps.logit_std);
  c.timesteps.p_mean = r.number("p_mean", c.timesteps.p_mean);
  c.timesteps.p_std = r.positive("p_std", c.timesteps.p_std);
  c.weighting.kind = r.parsed("weighting", c.weighting.kind, weighting_from_string);
  c.weighting.gamma = r.positive("min_snr_gamma", c.weighting.gamma);
  c.weighting.p2_k = r.positive("p2_k", c.weighting.p2_k);
  c.weighting.p2_gamma = r.number("p2_gamma", c.weighting.p2_gamma);
  c.cond_dropout = r.probability("cond_dropout", c.cond_dropout);
  c.batch_size = r.integer("batch_size", c.batch_size, 1);
  c.steps = r.integer("steps", c.steps, 1);
  c.lr = r.positive("lr", c.lr);
  c.lr_schedule = r.string("lr_schedule", c.lr_schedule);
  c.warmup_steps = r.integer("warmup_steps", c.warmup_steps, 0);
  c.min_lr = r.number("min_lr", c.min_lr);
  c.weight_decay = r.number("weight_decay", c.weight_decay);
  c.beta1 = r.probability("beta1", c.beta1);
  c.beta2 = r.probability("beta2", c.beta2);
  c.adam_eps = r.positive("adam_eps", c.adam_eps);
  c.grad_clip = r.number("grad_clip", c.grad_clip);
  c.ema_decay = r.probability("ema_decay", c.ema_decay);
  c.bf16 = r.boolean("bf16", c.bf16);
  c.seed = uint64_t(r.integer("seed", int64_t(c.seed), 0));
  c.threads = int(r.integer("threads", c.threads, 0));
  c.log_every = r.integer("log_every", c.log_every, 1);
  c.checkpoint_every = r.integer("checkpoint_every", c.checkpoint_every, 1);
  c.sample_every = r.integer("sample_every", c.sample_every, 0);
  c.sample_steps = int(r.integer("sample_steps", c.sample_steps, 1));
  c.sample_cfg = r.number("sample_cfg", c.sample_cfg);
  c.sample_per_class = int(r.integer("sample_per_class", c.sample_per_class, 1));
  r.finish();
  if (c.arch.empty() || c.network_json.empty()) fail(where, ": 'arch' and 'network' are required");
  if (c.arch == "sd" && c.vae.empty()) fail(where, ": arch 'sd' needs 'vae' (a tweedie train-autoencoder model file)");
  if (c.arch != "sd" && !c.vae.empty()) r.bad("vae", "applies only to arch 'sd'");
  if (c.arch == "sd" && c.param.kind != PredKind::Eps && c.param.kind != PredKind::V)
    r.bad("prediction", "must be eps or v for arch 'sd' (what Stable Diffusion files can state)");
  if (c.weight_decay < 0) r.bad("weight_decay", "must be >= 0");
  if (c.grad_clip < 0) r.bad("grad_clip", "must be >= 0");
  if (c.min_lr < 0 || c.min_lr > c.lr) r.bad("min_lr", "must be in [0, lr]");
  try {
    make_process(c.process);
    make_network(c.arch, c.network_json);
    if (c.arch == "sd") sd_schedule_of(c.process);
    LRSchedule s{lr_kind_from_string(c.lr_schedule), c.lr, c.warmup_steps, c.steps, c.min_lr};
    s.validate();
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  }
  c.config_json = r.object().dump();
  return c;
}

void TrainConfig::set_steps(int64_t s) {
  check(s >= 1, "steps must be >= 1");
  steps = s;
  auto j = nlohmann::json::parse(this->config_json);
  j["steps"] = s;
  this->config_json = j.dump();
}

namespace {

// Config keys that may change when resuming.
bool resumable_change(const std::string& k) {
  return k == "steps" || k == "log_every" || k == "checkpoint_every" || k == "sample_every" || k == "threads" ||
         k == "tokenizer";
}

struct AutocastBF16 {
  bool on;
  explicit AutocastBF16(bool enable) : on(enable) {
    if (on) {
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
      at::autocast::set_cpu_enabled(true);
    }
  }
  ~AutocastBF16() {
    if (on) {
      at::autocast::set_cpu_enabled(false);
      at::autocast::clear_cache();
    }
  }
};

}  // namespace

struct Trainer::Impl : detail::TrainLog {
  TrainConfig cfg;
  std::string out;
  Dataset data;
  // arch "sd": text-to-image in a frozen autoencoder's latent space.
  std::unique_ptr<ImageSource> captioned;  // FashionCanvas (images with captions)
  AutoencoderKL vae{nullptr};
  std::unique_ptr<ClipTokenizer> tok;
  bool text() const { return !vae.is_empty(); }
  ProcessPtr proc;
  NetworkPtr net;
  std::unique_ptr<AdamW> opt;
  std::unique_ptr<EMA> ema;
  std::unique_ptr<DataOrder> order;
  torch::Generator gen;
  std::vector<torch::Tensor> params;  // the network's, for gradient clipping
  LRSchedule lrs;

  std::vector<std::pair<std::string, torch::Tensor>> named_params() {
    std::vector<std::pair<std::string, torch::Tensor>> v;
    for (auto& p : net->named_parameters()) v.emplace_back(p.key(), p.value());
    return v;
  }

  void save_checkpoint() {
    std::vector<std::pair<std::string, torch::Tensor>> t;
    for (auto& [k, v] : network_tensors(*net)) t.emplace_back("model." + k, v);
    for (auto& kv : ema->state()) t.push_back(kv);
    for (auto& [k, v] : opt->state()) t.emplace_back("opt." + k, v);
    if (order)
      for (auto& kv : order->state_tensors()) t.push_back(kv);
    t.emplace_back("rng.train", gen.get_state());
    t.emplace_back("rng.global", at::detail::getDefaultCPUGenerator().get_state());
    append_tensors(t);
    save_safetensors(out + "/checkpoint.safetensors", t, {{"tweedie.train_config", cfg.config_json}});
    save_model();
  }

  // Fine-tuning: the weights of an earlier model of the same architecture.
  void load_init() {
    torch::NoGradGuard ng;
    if (cfg.arch != "sd") {
      load_network_weights(cfg.init, *net);
      return;
    }
    SdLoadOptions o;
    o.dtype = torch::kFloat32;
    SdCheckpoint c = load_sd_checkpoint(cfg.init, o);
    auto& sdn = dynamic_cast<SdNetwork&>(*net);
    check(c.unet_config.to_json() == sdn.config().unet.to_json(), cfg.init, ": its UNet ", c.unet_config.to_json(),
          " differs from the config's ", sdn.config().unet.to_json());
    check(c.text_encoders.size() == 1 && c.text_encoders[0].configured &&
              c.text_encoders[0].config.to_json() == sdn.config().text.to_json() &&
              c.text_encoders[0].layer == sdn.config().layer() &&
              c.text_encoders[0].final_norm == sdn.config().final_norm,
          cfg.init, ": its text encoder differs from the config's ", sdn.config().text.to_json());
    load_module_weights(*sdn.unet(), c.unet, cfg.init);
    ClipTextModel t = sdn.text();
    load_module_weights(*t, c.text_encoders[0].weights, cfg.init);
  }

  void load_checkpoint() {
    const std::string path = out + "/checkpoint.safetensors";
    SafeTensors ck = load_safetensors(path);
    auto it = ck.metadata.find("tweedie.train_config");
    check(it != ck.metadata.end(), path, ": not a tweedie training checkpoint");
    json old = json::parse(it->second), now = json::parse(cfg.config_json);
    for (auto& [k, v] : now.items())
      if (!resumable_change(k) && (!old.contains(k) || old[k] != v))
        fail(path, ": config key '", k, "' differs from the checkpoint's (only steps, log_every, checkpoint_every, ",
             "sample_every and threads may change on resume)");
    for (auto& [k, v] : old.items())
      if (!resumable_change(k) && !now.contains(k)) fail(path, ": config key '", k, "' is missing but the checkpoint has it");
    auto lookup = [&](const std::string& k) { return ck.find(k); };
    {
      torch::NoGradGuard ng;
      for (auto& [k, v] : network_tensors(*net)) {
        const torch::Tensor* s = ck.find("model." + k);
        check(s && s->sizes() == v.sizes(), path, ": checkpoint tensor 'model.", k, "' missing or mis-shaped");
        v.copy_(*s);
      }
    }
    ema->load_state(lookup);
    opt->load_state([&](const std::string& k) { return ck.find("opt." + k); });
    if (order) order->load_state(lookup);
    gen.set_state(ck.at("rng.train").clone());
    {
      at::Generator global = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(global.mutex());
      global.set_state(ck.at("rng.global").clone());
    }
    load_tensors(ck);
  }

  std::shared_ptr<NetDenoiser> denoiser() { return std::make_shared<NetDenoiser>(net, proc, cfg.param); }

  void save_model() {
    EMAScope scope(*ema, *net);
    auto d = denoiser();
    json tr = {{"steps", step},
               {"images_seen", step * cfg.batch_size},
               {"train_seconds", train_seconds},
               {"config", json::parse(cfg.config_json)}};
    if (text())
      save_sd_model(tr);
    else
      save_model_file(out + "/model.safetensors", *d, data.class_names, {{"tweedie.training", tr.dump()}});
  }

  // arch "sd": one Stable Diffusion single file (tweedie form: the LDM layout
  // with the architecture in "tweedie.sd"), fp16, that load_sd_checkpoint and
  // the StableDiffusion pipeline read like any SD 1.x file.
  void save_sd_model(const json& training) {
    auto& sdn = dynamic_cast<SdNetwork&>(*net);
    SdCheckpoint c;
    c.source = out + "/model.safetensors";
    c.family = "sd1";
    c.prediction = cfg.param.kind == PredKind::V ? "v" : "eps";
    c.unet_config = sdn.config().unet;
    c.vae_config = vae->config();
    c.schedule = sd_schedule_of(cfg.process);
    for (auto& [k, v] : module_tensors(*sdn.unet())) c.unet[k] = v.detach();
    for (auto& [k, v] : module_tensors(*vae)) c.vae[k] = v.detach();
    SdTextEncoder te;
    te.name = "clip_l";
    for (auto& [k, v] : module_tensors(*sdn.text())) te.weights[k] = v.detach();
    te.config = sdn.config().text;
    te.layer = sdn.config().layer();
    te.final_norm = sdn.config().final_norm;
    te.configured = true;
    c.text_encoders.push_back(std::move(te));
    SdSaveOptions o;
    o.dtype = torch::kHalf;
    o.metadata = {{"tweedie.training", training.dump()}};
    save_sd_checkpoint(c, c.source, SdForm::Tweedie, o);
  }

  // Token ids [N, 77] of captions (BOS, tokens, EOS, EOS padding: SD 1.x's
  // windows); a caption longer than 75 tokens keeps its first 75, as SD's
  // training scripts truncate.
  torch::Tensor token_ids(const std::vector<std::string>& captions) const {
    ChunkOptions co;
    co.emphasis = false;
    co.comma_backtrack = 0;
    std::vector<torch::Tensor> rows;
    for (auto& cap : captions) {
      auto chunks = chunk_prompt(*tok, cap, co);
      chunks.resize(1);
      rows.push_back(prompt_windows(chunks, tok->bos(), tok->eos(), tok->eos()).ids);
    }
    return torch::cat(rows);
  }

  // Latents of uint8 images: scaling_factor * a posterior sample (drawn from gen).
  torch::Tensor encode_latents(const torch::Tensor& u8) {
    torch::NoGradGuard ng;
    auto z = vae->encode(to_unit_range(u8), gen);
    return z * vae->config().scaling_factor;
  }

  void write_samples() {
    if (text()) return write_text_samples();
    EMAScope scope(*ema, *net);
    net->eval();
    torch::NoGradGuard ng;
    const int64_t K = data.labelled() ? data.num_classes() : 1, per = cfg.sample_per_class;
    DenoiserPtr d = denoiser();
    Cond c;
    if (data.labelled()) {
      c.labels = torch::arange(K, torch::kInt64).repeat_interleave(per);
      if (cfg.sample_cfg != 1.0) d = std::make_shared<CFGDenoiser>(d, cfg.sample_cfg);
    }
    auto g = at::make_generator<at::CPUGeneratorImpl>(cfg.seed + 12345);
    auto sig = make_schedule("karras", *proc, cfg.sample_steps);
    auto x = at::randn({K * per, data.channels(), data.height() + 2 * cfg.pad, data.width() + 2 * cfg.pad}, g) * sig[0];
    SamplerRun run(*d, sig, c, {}, g);
    x = run_sampler(find_sampler("deis"), run, x);
    net->train();
    Image grid = make_grid(x.clamp(-1, 1), int(per));
    write_png(out + "/samples_" + std::to_string(step) + ".png", grid);
    write_png(out + "/samples.png", grid);
  }

  // A grid of samples for the canonical captions of the first test canvases
  // (sample_per_class rows of 4), with their captions' real canvases beside.
  void write_text_samples() {
    EMAScope scope(*ema, *net);
    net->eval();
    torch::NoGradGuard ng;
    auto& sdn = dynamic_cast<SdNetwork&>(*net);
    ImageSource refs("fashion-canvas:test", 0);
    const int64_t n = 4 * cfg.sample_per_class;
    std::vector<std::string> caps;
    auto real = refs.images(0, n, &caps, false);
    Cond c;
    c.context = sdn.encode(token_ids(caps));
    c.extra["null_context"] = sdn.encode(token_ids({""}));
    DenoiserPtr d = denoiser();
    if (cfg.sample_cfg != 1.0) d = std::make_shared<CFGDenoiser>(d, cfg.sample_cfg);
    auto g = at::make_generator<at::CPUGeneratorImpl>(cfg.seed + 12345);
    auto sig = make_schedule("karras", *proc, cfg.sample_steps);
    auto shape = net->sample_shape();
    auto x = at::randn({n, shape[0], shape[1], shape[2]}, g) * sig[0];
    SamplerRun run(*d, sig, c, {}, g);
    x = run_sampler(find_sampler("deis"), run, x);
    auto img = vae->decode(x / vae->config().scaling_factor).clamp(-1, 1);
    net->train();
    std::vector<torch::Tensor> rows;
    for (int64_t r = 0; r < cfg.sample_per_class; ++r) {
      rows.push_back(img.narrow(0, 4 * r, 4));
      rows.push_back(to_unit_range(real.narrow(0, 4 * r, 4)));
    }
    Image grid = make_grid(torch::cat(rows), 8);
    write_png(out + "/samples_" + std::to_string(step) + ".png", grid);
    write_png(out + "/samples.png", grid);
  }

  void write_loss_plot() { plot_loss(out + "/loss.png", "training loss", cfg.log_every); }

};

Trainer::Trainer(TrainConfig cfg, std::string out_dir, bool resume) : impl_(new Impl) {
  Impl& m = *impl_;
  m.cfg = std::move(cfg);
  m.out = std::move(out_dir);
  check(is_directory(m.out), "output directory '", m.out, "' does not exist");
  if (m.cfg.threads > 0) configure_threads(m.cfg.threads);
  const bool canvas = m.cfg.data.rfind("fashion-canvas", 0) == 0;
  check(canvas == (m.cfg.arch == "sd"), m.cfg.data, ": ",
        canvas ? "captioned FashionCanvas data trains arch 'sd' (a UNet with its text encoder)"
               : "arch 'sd' trains on captioned images (data \"fashion-canvas\")");
  m.proc = make_process(m.cfg.process);
  torch::manual_seed(m.cfg.seed);  // network initialization and dropout
  m.net = make_network(m.cfg.arch, m.cfg.network_json);
  if (!m.cfg.init.empty() && !resume) m.load_init();
  auto shape = m.net->sample_shape();
  if (canvas) {
    check(m.cfg.pad == 0 && !m.cfg.hflip, "pad and hflip do not apply to FashionCanvas (cells and captions are fixed)");
    m.captioned = std::make_unique<ImageSource>(m.cfg.data, m.cfg.seed);
    m.vae = load_autoencoder_file(m.cfg.vae);
    for (auto& p : m.vae->parameters()) p.set_requires_grad(false);
    std::string tk = m.cfg.tokenizer;
    if (tk.empty())
      if (const char* env = std::getenv("TWEEDIE_TOKENIZER"); env && *env) tk = env;
    check(!tk.empty(), "arch 'sd' needs CLIP's tokenizer files: set 'tokenizer' in the config or TWEEDIE_TOKENIZER");
    m.tok = std::make_unique<ClipTokenizer>(tk);
    const auto img = m.captioned->image_shape();
    const int64_t f = m.vae->config().downscale();
    check(shape.size() == 3 && shape[0] == m.vae->config().embed_dim && shape[1] * f == img[1] && shape[2] * f == img[2],
          "the network expects latents of shape ", c10::IntArrayRef(shape), ", the autoencoder gives [",
          m.vae->config().embed_dim, ", ", img[1] / f, ", ", img[2] / f, "] for the data's ", img[1], "x", img[2],
          " images");
  } else {
    m.data = load_dataset(m.cfg.data);
    if (m.cfg.pad > 0) m.data = m.data.padded(m.cfg.pad);
    check(m.data.size() >= m.cfg.batch_size, m.cfg.data, ": ", m.data.size(), " images, fewer than batch_size ",
          m.cfg.batch_size);
    check(shape.size() == 3 && shape[0] == m.data.channels() && shape[1] == m.data.height() &&
              shape[2] == m.data.width(),
          "the network expects images of shape ", c10::IntArrayRef(shape), ", the data has [", m.data.channels(), ", ",
          m.data.height(), ", ", m.data.width(), "] (after padding)");
    check(!m.data.labelled() || m.net->num_classes() == m.data.num_classes() || m.net->num_classes() == 0,
          "the network has ", m.net->num_classes(), " classes, the data has ", m.data.num_classes());
    m.order = std::make_unique<DataOrder>(m.data.size(), m.cfg.batch_size, m.cfg.seed);
  }
  m.net->train();
  m.opt = std::make_unique<AdamW>(m.named_params(),
                                  AdamW::Options{m.cfg.lr, m.cfg.beta1, m.cfg.beta2, m.cfg.adam_eps, m.cfg.weight_decay});
  EMAOptions eo;
  eo.decay = m.cfg.ema_decay;
  m.ema = std::make_unique<EMA>(*m.net, eo);
  m.gen = at::make_generator<at::CPUGeneratorImpl>(m.cfg.seed + 1);
  m.lrs = LRSchedule{lr_kind_from_string(m.cfg.lr_schedule), m.cfg.lr, m.cfg.warmup_steps, m.cfg.steps, m.cfg.min_lr};
  if (resume) m.load_checkpoint();
}

Trainer::~Trainer() = default;
int64_t Trainer::step() const { return impl_->step; }
std::shared_ptr<NetDenoiser> Trainer::ema_denoiser() {
  auto net = make_network(impl_->cfg.arch, impl_->cfg.network_json);
  impl_->ema->copy_to(*net);
  net->eval();
  return std::make_shared<NetDenoiser>(net, impl_->proc, impl_->cfg.param);
}

double Trainer::train_step() {
  Impl& m = *impl_;
  const TrainConfig& c = m.cfg;
  check(m.step < c.steps, "training is complete (", m.step, " of ", c.steps, " steps)");
  if (m.params.empty())
    for (auto& p : m.net->parameters()) m.params.push_back(p);
  torch::Tensor x0;
  Cond cond;
  if (m.text()) {
    std::vector<std::string> caps;
    auto u8 = m.captioned->images(m.step * c.batch_size, c.batch_size, &caps, true);
    auto drop = torch::rand({c.batch_size}, m.gen);  // caption dropout: the empty prompt, as CFG's null condition
    auto da = drop.accessor<float, 1>();
    for (int64_t i = 0; i < c.batch_size; ++i)
      if (da[i] < c.cond_dropout) caps[size_t(i)].clear();
    cond.extra["input_ids"] = m.token_ids(caps);
    x0 = m.encode_latents(u8);
  } else {
    auto idx = m.order->next();
    x0 = m.data.batch_images(idx);
    if (c.hflip) x0 = random_hflip(x0, m.gen);
    if (m.data.labelled() && m.net->num_classes() > 0)
      cond.labels = drop_labels(m.data.batch_labels(idx), c.cond_dropout, m.gen);
  }
  auto s = sample_levels(c.timesteps, *m.proc, x0.size(0), m.gen);
  auto eps = at::randn(x0.sizes(), m.gen, x0.options());
  auto x = add_noise(*m.proc, x0, eps, s);
  auto in = model_input(*m.proc, c.param, x, s);
  torch::Tensor loss;
  {
    AutocastBF16 ac(c.bf16);
    auto outp = m.net->forward(in.x, in.t, cond);
    loss = training_loss(outp.to(torch::kFloat32), x0, eps, s, c.param, *m.proc, c.weighting).mean();
  }
  const double lv = loss.item<double>();
  check(std::isfinite(lv), "training diverged: the loss is ", lv, " at step ", m.step + 1);
  m.opt->zero_grad();
  loss.backward();
  if (c.grad_clip > 0) clip_grad_norm(m.params, c.grad_clip);
  m.opt->step(lr_at(m.lrs, m.step));
  m.ema->update(*m.net);
  ++m.step;
  return lv;
}

void Trainer::run(const std::function<void(const TrainStats&)>& progress) {
  Impl& m = *impl_;
  const TrainConfig& c = m.cfg;
  m.TrainLog::run(
      c.steps, c.log_every, c.batch_size, [&] { return lr_at(m.lrs, m.step); }, [&] { return train_step(); },
      [&] {
        if (c.sample_every > 0 && m.step % c.sample_every == 0 && m.step < c.steps) m.write_samples();
        if (m.step % c.checkpoint_every == 0 && m.step < c.steps) {
          m.save_checkpoint();
          m.write_loss_plot();
        }
      },
      progress);
  m.save_checkpoint();
  m.write_loss_plot();
  m.write_samples();
}

}  // namespace tweedie
