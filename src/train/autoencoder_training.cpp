// AutoencoderKL training (train/autoencoder_training.h) and the shared
// training-image source.
#include "tweedie/train/autoencoder_training.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <mutex>
#include <nlohmann/json.hpp>

#include "../core/config_reader.h"
#include "train_log.h"
#include "tweedie/core/error.h"
#include "tweedie/core/runtime.h"
#include "tweedie/eval/image_metrics.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/io/plot.h"
#include "tweedie/io/safetensors.h"
#include "tweedie/nn/module_weights.h"
#include "tweedie/train/adamw.h"
#include "tweedie/train/fashion_canvas.h"
#include "tweedie/train/lr_schedule.h"

namespace tweedie {

using json = nlohmann::json;

// ---- ImageSource ----------------------------------------------------------

struct ImageSource::Impl {
  std::unique_ptr<FashionCanvas> canvas;
  Dataset data;
  uint64_t seed = 0;
  // The permutation of one epoch, kept: consecutive calls read the same epoch.
  int64_t perm_epoch = -1;
  std::vector<int64_t> perm;
  const std::vector<int64_t>& permutation(int64_t epoch) {
    if (epoch != perm_epoch) perm = DataOrder::permutation(data.size(), seed, epoch), perm_epoch = epoch;
    return perm;
  }
};

ImageSource::ImageSource(const std::string& spec, uint64_t seed) : impl_(new Impl) {
  impl_->seed = seed;
  if (spec == "fashion-canvas" || spec == "fashion-canvas:train")
    impl_->canvas = std::make_unique<FashionCanvas>("train");
  else if (spec == "fashion-canvas:test")
    impl_->canvas = std::make_unique<FashionCanvas>("test");
  else
    impl_->data = load_dataset(spec);
}
ImageSource::~ImageSource() = default;

bool ImageSource::is_canvas() const { return impl_->canvas != nullptr; }
const Dataset* ImageSource::dataset() const { return impl_->canvas ? nullptr : &impl_->data; }

std::vector<int64_t> ImageSource::image_shape() const {
  if (impl_->canvas) return {3, 64, 64};
  return {impl_->data.channels(), impl_->data.height(), impl_->data.width()};
}

torch::Tensor ImageSource::images(int64_t consumed, int64_t n, std::vector<std::string>* captions, bool vary) const {
  if (impl_->canvas) {
    auto [img, caps] = impl_->canvas->batch(impl_->seed, consumed, n, vary);
    if (captions) *captions = std::move(caps);
    return img;
  }
  if (captions) captions->clear();
  const Dataset& d = impl_->data;
  std::vector<int64_t> idx;
  int64_t epoch = consumed / d.size(), pos = consumed % d.size();
  while (int64_t(idx.size()) < n) {
    if (pos == d.size()) ++epoch, pos = 0;
    idx.push_back(impl_->permutation(epoch)[size_t(pos++)]);
  }
  return d.images.index_select(0, torch::tensor(idx, torch::kInt64));
}

// ---- config ------------------------------------------------------------------

AutoencoderTrainConfig AutoencoderTrainConfig::parse(const std::string& text, const std::string& where) {
  if (text.empty()) fail(where, ": malformed JSON (the file is empty)");
  detail::ConfigReader r(where, text, detail::ConfigReader::Style::WhyThenValue);
  AutoencoderTrainConfig c;
  c.data = r.string("data", c.data);
  c.test_data = r.string("test_data", c.test_data);
  const std::string vae = r.object_json("vae");
  c.kl_weight = r.number("kl_weight", c.kl_weight);
  if (r.has("logvar_init")) c.logvar_init = r.number("logvar_init", 0.0);
  c.init = r.string("init", c.init);
  c.crop = r.integer("crop", c.crop, 0);
  c.loss = r.string("loss", c.loss);
  c.batch_size = r.integer("batch_size", c.batch_size, 1);
  c.steps = r.integer("steps", c.steps, 1);
  c.lr = r.positive("lr", c.lr);
  c.min_lr = r.number("min_lr", c.min_lr);
  c.warmup_steps = r.integer("warmup_steps", c.warmup_steps, 0);
  c.weight_decay = r.number("weight_decay", c.weight_decay);
  c.grad_clip = r.number("grad_clip", c.grad_clip);
  c.seed = uint64_t(r.integer("seed", int64_t(c.seed), 0));
  c.threads = int(r.integer("threads", c.threads, 0));
  c.log_every = r.integer("log_every", c.log_every, 1);
  c.checkpoint_every = r.integer("checkpoint_every", c.checkpoint_every, 1);
  c.eval_images = r.integer("eval_images", c.eval_images, 1);
  r.finish();
  if (vae.empty()) fail(where, ": 'vae' (an autoencoder_kl config object) is required");
  try {
    c.vae = AutoencoderKLConfig::from_json(vae);
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  }
  if (c.kl_weight < 0) r.bad("kl_weight", "must be >= 0");
  if (c.crop % c.vae.downscale() != 0) r.bad("crop", "must be a multiple of the downscale factor " + std::to_string(c.vae.downscale()));
  if (c.loss != "l1" && c.loss != "l2") r.bad("loss", "must be \"l1\" or \"l2\"");
  if (c.weight_decay < 0) r.bad("weight_decay", "must be >= 0");
  if (c.grad_clip < 0) r.bad("grad_clip", "must be >= 0");
  if (c.min_lr < 0 || c.min_lr > c.lr) r.bad("min_lr", "must be in [0, lr]");
  c.config_json = r.object().dump();
  return c;
}

void AutoencoderTrainConfig::set_steps(int64_t s) {
  check(s >= 1, "steps must be >= 1");
  steps = s;
  auto j = json::parse(config_json);
  j["steps"] = s;
  config_json = j.dump();
}

// ---- the trainer ----------------------------------------------------------------

struct AutoencoderTrainer::Impl : detail::TrainLog {
  AutoencoderTrainConfig cfg;
  std::string out;
  std::unique_ptr<ImageSource> train, test;
  AutoencoderKL vae{nullptr};
  std::unique_ptr<AdamW> opt;
  std::vector<torch::Tensor> params;
  torch::Generator gen;
  LRSchedule lrs;

  std::vector<std::pair<std::string, torch::Tensor>> weights() {
    std::vector<std::pair<std::string, torch::Tensor>> v;
    for (auto& p : vae->named_parameters()) v.emplace_back(p.key(), p.value());
    return v;
  }

  torch::Tensor test_images() { return to_unit_range(test->images(0, cfg.eval_images, nullptr, false)); }

  void save_model(const AutoencoderEval& ev) {
    AutoencoderKLConfig c = cfg.vae;
    c.scaling_factor = ev.scaling_factor;
    json tr = {{"steps", step},
               {"images_seen", step * cfg.batch_size},
               {"train_seconds", train_seconds},
               {"test_psnr", ev.psnr},
               {"latent_std", ev.latent_std},
               {"config", json::parse(cfg.config_json)}};
    std::vector<std::pair<std::string, torch::Tensor>> t;
    for (auto& [k, v] : weights()) t.emplace_back(k, v.detach());
    save_safetensors(out + "/model.safetensors", t,
                     {{"tweedie.autoencoder_kl", c.to_json()}, {"tweedie.training", tr.dump()}});
  }

  void save_checkpoint() {
    std::vector<std::pair<std::string, torch::Tensor>> t;
    for (auto& [k, v] : weights()) t.emplace_back("model." + k, v.detach());
    for (auto& [k, v] : opt->state()) t.emplace_back("opt." + k, v);
    t.emplace_back("rng.train", gen.get_state());
    append_tensors(t);
    save_safetensors(out + "/checkpoint.safetensors", t, {{"tweedie.autoencoder_train_config", cfg.config_json}});
  }

  void load_checkpoint() {
    const std::string path = out + "/checkpoint.safetensors";
    SafeTensors ck = load_safetensors(path);
    auto it = ck.metadata.find("tweedie.autoencoder_train_config");
    check(it != ck.metadata.end(), path, ": not a tweedie autoencoder training checkpoint");
    json old = json::parse(it->second), now = json::parse(cfg.config_json);
    old.erase("steps"), now.erase("steps");
    for (const char* k : {"log_every", "checkpoint_every", "threads"}) old.erase(k), now.erase(k);
    check(old == now, path, ": the config differs from the checkpoint's (only steps, log_every, checkpoint_every and ",
          "threads may change on resume)");
    {
      torch::NoGradGuard ng;
      for (auto& [k, v] : weights()) {
        const torch::Tensor* s = ck.find("model." + k);
        check(s && s->sizes() == v.sizes(), path, ": checkpoint tensor 'model.", k, "' missing or mis-shaped");
        v.copy_(*s);
      }
    }
    opt->load_state([&](const std::string& k) { return ck.find("opt." + k); });
    gen.set_state(ck.at("rng.train").clone());
    load_tensors(ck);
  }

  void write_pictures() {
    plot_loss(out + "/loss.png", "autoencoder training loss", cfg.log_every);
    torch::NoGradGuard ng;
    vae->eval();
    const int64_t n = std::min<int64_t>(8, cfg.eval_images);
    auto x = test_images().narrow(0, 0, n);
    auto y = vae->decode(vae->encode(x)).clamp(-1, 1);
    vae->train();
    write_png(out + "/reconstructions.png", make_grid(torch::cat({x, y}), int(n)));
  }
};

AutoencoderTrainer::AutoencoderTrainer(AutoencoderTrainConfig cfg, std::string out_dir, bool resume) : impl_(new Impl) {
  Impl& m = *impl_;
  m.cfg = std::move(cfg);
  m.out = std::move(out_dir);
  check(is_directory(m.out), "output directory '", m.out, "' does not exist");
  if (m.cfg.threads > 0) configure_threads(m.cfg.threads);
  m.train = std::make_unique<ImageSource>(m.cfg.data, m.cfg.seed);
  m.test = std::make_unique<ImageSource>(m.cfg.test_data, 0);
  auto shape = m.train->image_shape();
  check(shape == m.test->image_shape(), m.cfg.data, " and ", m.cfg.test_data, " have different image shapes");
  check(shape[0] == m.cfg.vae.in_channels && shape[0] == m.cfg.vae.out_ch, "the autoencoder has ", m.cfg.vae.in_channels,
        " input and ", m.cfg.vae.out_ch, " output channels, the data has ", shape[0]);
  check(m.cfg.crop == 0 || (shape[1] % m.cfg.crop == 0 && shape[2] % m.cfg.crop == 0), "crop ", m.cfg.crop,
        " does not tile images of ", shape[1], "x", shape[2]);
  check(shape[1] % m.cfg.vae.downscale() == 0 && shape[2] % m.cfg.vae.downscale() == 0, "images of ", shape[1], "x",
        shape[2], " are not divisible by the autoencoder's downscale factor ", m.cfg.vae.downscale());
  torch::manual_seed(m.cfg.seed);
  m.vae = AutoencoderKL(m.cfg.vae);
  if (!m.cfg.init.empty() && !resume) {  // fine-tuning: start from a trained autoencoder of the same architecture
    AutoencoderKL from = load_autoencoder_file(m.cfg.init);
    AutoencoderKLConfig a = from->config(), b = m.cfg.vae;
    a.scaling_factor = b.scaling_factor = 0;  // measured, not architecture
    check(a.to_json() == b.to_json(), m.cfg.init, ": its architecture ", from->config().to_json(),
          " differs from the config's 'vae' ", m.cfg.vae.to_json());
    StateDict w;
    for (auto& [k, v] : module_tensors(*from)) w[k] = v.detach().clone();
    load_module_weights(*m.vae, w, m.cfg.init);
  } else if (m.cfg.logvar_init) {  // the log-variance half of the last encoder layer's output channels
    torch::NoGradGuard ng;
    auto p = m.vae->named_parameters();
    auto bias = p[m.cfg.vae.use_quant_conv ? "quant_conv.bias" : "encoder.conv_out.bias"];
    bias.narrow(0, bias.size(0) / 2, bias.size(0) / 2).fill_(*m.cfg.logvar_init);
  }
  m.vae->train();
  m.opt = std::make_unique<AdamW>(m.weights(), AdamW::Options{m.cfg.lr, 0.9, 0.999, 1e-8, m.cfg.weight_decay});
  for (auto& [k, v] : m.weights()) m.params.push_back(v);
  m.gen = at::make_generator<at::CPUGeneratorImpl>(m.cfg.seed + 1);
  m.lrs = LRSchedule{LRSchedule::Kind::Cosine, m.cfg.lr, m.cfg.warmup_steps, m.cfg.steps, m.cfg.min_lr};
  m.lrs.validate();
  if (resume) m.load_checkpoint();
}

AutoencoderTrainer::~AutoencoderTrainer() = default;
int64_t AutoencoderTrainer::step() const { return impl_->step; }
AutoencoderKL AutoencoderTrainer::model() const { return impl_->vae; }

double AutoencoderTrainer::train_step() {
  Impl& m = *impl_;
  const auto& c = m.cfg;
  check(m.step < c.steps, "training is complete (", m.step, " of ", c.steps, " steps)");
  auto x = to_unit_range(m.train->images(m.step * c.batch_size, c.batch_size));
  if (c.crop > 0) {  // one crop-aligned tile of each image, drawn uniformly
    const int64_t gh = x.size(2) / c.crop, gw = x.size(3) / c.crop;
    auto pick = torch::randint(gh * gw, {x.size(0)}, m.gen, torch::kInt64);
    std::vector<torch::Tensor> tiles;
    for (int64_t i = 0; i < x.size(0); ++i) {
      const int64_t k = pick[i].item<int64_t>();
      tiles.push_back(x[i].narrow(1, (k / gw) * c.crop, c.crop).narrow(2, (k % gw) * c.crop, c.crop));
    }
    x = torch::stack(tiles);
  }
  auto q = m.vae->posterior(x);
  auto y = m.vae->decode(q.sample(m.gen));
  auto err = c.loss == "l1" ? (y - x).abs() : (y - x).square();
  const double pixels = double(x.size(1) * x.size(2) * x.size(3));
  auto kl = q.kl().mean() / pixels;
  auto loss = err.mean() + c.kl_weight * kl;
  const double lv = loss.item<double>();
  check(std::isfinite(lv), "training diverged: the loss is ", lv, " at step ", m.step + 1);
  m.opt->zero_grad();
  loss.backward();
  if (c.grad_clip > 0) clip_grad_norm(m.params, c.grad_clip);
  m.opt->step(lr_at(m.lrs, m.step));
  ++m.step;
  return lv;
}

AutoencoderEval AutoencoderTrainer::evaluate() {
  Impl& m = *impl_;
  torch::NoGradGuard ng;
  m.vae->eval();
  auto x = m.test_images();
  AutoencoderEval ev;
  double psnr_sum = 0;
  std::vector<torch::Tensor> zs;
  auto g = at::make_generator<at::CPUGeneratorImpl>(12345);
  for (int64_t i = 0; i < x.size(0); i += 64) {
    auto xb = x.narrow(0, i, std::min<int64_t>(64, x.size(0) - i));
    auto post = m.vae->posterior(xb);
    zs.push_back(post.sample(g));
    auto y = m.vae->decode(post.mean).clamp(-1, 1);
    auto q = [](const torch::Tensor& t) { return torch::round((t + 1) * 127.5) / 255.0; };
    psnr_sum += psnr(q(y), q(xb)).sum().item<double>();
  }
  m.vae->train();
  ev.psnr = psnr_sum / double(x.size(0));
  ev.latent_std = torch::cat(zs).std().item<double>();
  ev.scaling_factor = 1.0 / ev.latent_std;
  return ev;
}

void AutoencoderTrainer::run(const std::function<void(const TrainStats&)>& progress) {
  Impl& m = *impl_;
  const auto& c = m.cfg;
  m.TrainLog::run(
      c.steps, c.log_every, c.batch_size, [&] { return lr_at(m.lrs, m.step); }, [&] { return train_step(); },
      [&] {
        if (m.step % c.checkpoint_every == 0 && m.step < c.steps) {
          m.save_checkpoint();
          m.write_pictures();
        }
      },
      progress);
  m.save_checkpoint();
  m.save_model(evaluate());
  m.write_pictures();
}

AutoencoderKL load_autoencoder_file(const std::string& path) {
  SafeTensors st = load_safetensors(path);
  auto it = st.metadata.find("tweedie.autoencoder_kl");
  check(it != st.metadata.end(), path, ": not a tweedie autoencoder file (no 'tweedie.autoencoder_kl' metadata)");
  AutoencoderKLConfig c;
  try {
    c = AutoencoderKLConfig::from_json(it->second);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  AutoencoderKL vae(c);
  StateDict sd;
  for (auto& [k, v] : st.tensors) sd[k] = v;
  load_module_weights(*vae, sd, path);
  vae->eval();
  return vae;
}

}  // namespace tweedie
