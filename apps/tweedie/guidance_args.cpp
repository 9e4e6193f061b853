#include "guidance_args.h"

#include <cmath>
#include <tuple>

#include <fstream>
#include <sstream>

#include "edit_common.h"
#include "tweedie/core/error.h"
#include "tweedie/guide/autoguidance.h"
#include "tweedie/models/net_denoiser.h"
#include "tweedie/models/network_io.h"

namespace tweedie::cli {

std::vector<Args::Opt> guidance_opts() {
  return {
      {"negative-class", "", false, "CFG pushes away from this class (name or index) instead of the unconditional model", ""},
      {"cfg-rescale", "", false, "CFG-rescale phi in [0, 1] (Lin et al. 2024): mix of the guided x0 rescaled to the conditional x0's std (0.7 in the paper)", "0"},
      {"guidance-interval", "", false, "LO,HI: CFG only for sigma in (LO, HI] (Kynkaanniemi et al. 2024; HI may be inf); one conditional evaluation elsewhere", ""},
      {"cfg-schedule", "", false, "guidance strength (cfg - 1) times f(tau), tau = normalized model time, 1 = pure noise: constant (1), linear (2(1-tau)), cosine (1+cos(pi tau))", "constant"},
      {"dynamic-threshold", "", false, "Imagen dynamic thresholding of x0 at this percentile p in (0, 1), e.g. 0.995", ""},
      {"dynamic-threshold-max", "", false, "upper bound of the dynamic threshold (diffusers' sample_max_value)", "inf"},
      {"cads-noise", "", false, "CADS condition annealing (Sadat et al. 2024) with this noise scale on the class embedding, e.g. 0.25 (network models)", ""},
      {"cads-tau", "", false, "CADS TAU1,TAU2: clean condition below TAU1, noise alone above TAU2, linear between (normalized model time, 1 = pure noise)", "0.6,0.9"},
      {"cads-psi", "", false, "CADS rescale mix psi in [0, 1] (0 = no rescale)", "1"},
      {"pag", "", false, "perturbed-attention guidance scale (Ahn et al. 2024), e.g. 3 (network models)", "0"},
      {"pag-sites", "", false, "attention paths PAG perturbs, comma-separated (e.g. mid.attn.0,up.2.attn.*)", "middle block"},
      {"sag", "", false, "self-attention guidance scale (Hong et al. 2023), e.g. 0.75 (network models)", "0"},
      {"sag-site", "", false, "attention path whose map SAG reads", "middle block"},
      {"autoguidance", "", false, "AutoGuidance w (Karras et al. 2024): x0_bad + w (x0 - x0_bad); needs --guide-model", "1"},
      {"guide-model", "", false, "AutoGuidance's weaker model file (same process and sample shape)", ""},
      {"classifier-guidance", "", false, "classifier guidance scale (Dhariwal & Nichol 2021) with a noise-conditional classifier", "0"},
      {"guide-classifier", "", false, "noise-conditional classifier for --classifier-guidance", "models/fashion_mnist_noisy_classifier.safetensors"},
      {"loss-guidance", "", false, "loss guidance on x0_hat (universal guidance): classifier (cross-entropy for the class), brightness (mean pixel -> --loss-target) or reference (squared distance to --loss-reference after --loss-factor pooling)", ""},
      {"loss-scale", "", false, "loss guidance scale", "1"},
      {"loss-target", "", false, "target mean pixel in [-1, 1] of --loss-guidance brightness", "0"},
      {"loss-classifier", "", false, "classifier of clean images for --loss-guidance classifier", "the evaluation classifier"},
      {"loss-reference", "", false, "reference image (.png or .npy [1, ...] of the model's sample shape) for --loss-guidance reference", ""},
      {"loss-factor", "", false, "average-pooling factor of --loss-guidance reference (1 = the full image, 4 = its 4x4-block layout)", "1"},
  };
}

namespace {

// "A,B" -> two numbers (B may be "inf" when allow_inf).
std::pair<double, double> number_pair(const Args& a, const std::string& name, bool allow_inf) {
  const std::string v = a.str(name);
  const auto comma = v.find(',');
  auto num = [&](const std::string& t) {
    if (allow_inf && t == "inf") return double(INFINITY);
    try {
      size_t pos = 0;
      double x = std::stod(t, &pos);
      if (pos == t.size() && std::isfinite(x)) return x;
    } catch (const std::exception&) {
    }
    fail("--", name, " expects two numbers A,B, got '", v, "'");
  };
  if (comma == std::string::npos) fail("--", name, " expects two numbers A,B, got '", v, "'");
  return {num(v.substr(0, comma)), num(v.substr(comma + 1))};
}

// A finite number option (Error naming it otherwise).
double finite_number(const Args& a, const std::string& name) {
  const double v = a.number(name);
  check(std::isfinite(v), "--", name, " must be a finite number (got ", a.str(name), ")");
  return v;
}

void check_file(const std::string& option, const std::string& path) {
  check(std::ifstream(path).good(), "--", option, " ", path, ": no such file");
}

// A classifier file for --guide-classifier / --loss-classifier, checked against the model.
std::shared_ptr<Classifier> load_guide_classifier(const std::string& option, const std::string& path,
                                                  const LoadedModel& model, bool noisy) {
  check_file(option, path);
  std::map<std::string, std::string> md;
  std::shared_ptr<Classifier> clf;
  try {
    clf = as_classifier(load_network(path, &md), path);
  } catch (const Error& e) {
    fail("--", option, ": ", e.what());
  }
  const std::string where = "--" + option + " " + path;
  if (noisy) {
    check(clf->time_conditional(), where,
          ": a classifier of clean images; classifier guidance needs a noise-conditional one (train-classifier --noisy)");
    const std::string proc = md.count("tweedie.process") ? md["tweedie.process"] : "?";
    check(proc == model.denoiser->process().name(), where, ": trained on process ", proc, ", the model's is ",
          model.denoiser->process().name());
  } else {
    check(!clf->time_conditional(), where, ": a noise-conditional classifier; the loss judges clean estimates x0");
  }
  check(clf->num_classes() == model.num_classes, where, ": ", clf->num_classes(), " classes, the model has ",
        model.num_classes);
  check(model.sample_shape == clf->sample_shape(), where, ": input shape ", c10::IntArrayRef(clf->sample_shape()),
        " differs from the model's samples ", c10::IntArrayRef(model.sample_shape));
  return clf;
}

void check_cfg_modifiers(const Args& a, std::initializer_list<const char*> opts, double cfg, bool labelled,
                         const std::string& needs) {
  for (const char* o : opts) {
    if (!a.has(o)) continue;
    check(labelled, "--", o, " needs ", needs);
    check(cfg != 1.0, "--", o, " has no effect without guidance: give --cfg other than 1");
  }
}

// --cfg-rescale, --guidance-interval, --cfg-schedule.
void parse_cfg_modifiers(const Args& a, GuidanceOptions& g) {
  g.rescale = a.number("cfg-rescale");
  check(g.rescale >= 0 && g.rescale <= 1, "--cfg-rescale must be in [0, 1] (got ", g.rescale, ")");
  if (a.has("guidance-interval")) {
    auto [lo, hi] = number_pair(a, "guidance-interval", true);
    check(lo >= 0, "--guidance-interval: LO must be >= 0 (got ", a.str("guidance-interval"), ")");
    check(lo < hi, "--guidance-interval: LO must be below HI (got ", a.str("guidance-interval"), ")");
    g.interval = {lo, hi};
  }
  try {
    g.schedule = cfg_schedule_from_string(a.str("cfg-schedule"));
  } catch (const Error&) {
    fail("--cfg-schedule: unknown schedule '", a.str("cfg-schedule"), "' (constant, linear, cosine)");
  }
}

// --pag, --pag-sites, --sag, --sag-site (network: whether the model is a network, description names it).
void parse_attention_rules(const Args& a, GuidanceOptions& g, bool network, const std::string& description) {
  check(!a.has("pag-sites") || a.has("pag"), "--pag-sites needs --pag");
  check(!a.has("sag-site") || a.has("sag"), "--sag-site needs --sag");
  if (a.has("pag") || a.has("sag")) {
    const char* o = a.has("pag") ? "pag" : "sag";
    check(network, "--", o, " needs a network model (it works on the network's attention), not ", description);
  }
  g.pag = finite_number(a, "pag");
  if (a.has("pag-sites")) {
    std::stringstream ss(a.str("pag-sites"));
    for (std::string site; std::getline(ss, site, ',');) {
      check(!site.empty(), "--pag-sites: empty site in '", a.str("pag-sites"), "'");
      g.pag_sites.push_back(site);
    }
  }
  g.sag = finite_number(a, "sag");
  if (a.has("sag-site")) g.sag_site = a.str("sag-site");
}

}  // namespace

std::vector<Args::Opt> sd_guidance_opts() {
  std::vector<Args::Opt> out;
  for (auto& o : guidance_opts())
    for (const char* name : {"cfg-rescale", "guidance-interval", "cfg-schedule", "pag", "pag-sites", "sag", "sag-site"})
      if (o.name == name) out.push_back(o);
  return out;
}

GuidanceOptions sd_guidance_options(const Args& a, double cfg) {
  GuidanceOptions g;
  g.cfg = cfg;
  check_cfg_modifiers(a, {"cfg-rescale", "guidance-interval", "cfg-schedule"}, cfg, true, "");
  parse_cfg_modifiers(a, g);
  parse_attention_rules(a, g, true, "");
  return g;
}

GuidanceOptions guidance_options(const Args& a, const LoadedModel& model, double cfg, bool labelled,
                                 const std::string& needs, uint64_t seed) {
  GuidanceOptions g;
  g.cfg = cfg;
  // Options that modify CFG need labels and a scale other than 1.
  check_cfg_modifiers(a, {"negative-class", "cfg-rescale", "guidance-interval", "cfg-schedule"}, cfg, labelled, needs);
  if (a.has("negative-class")) {
    const std::string k = a.str("negative-class");
    check(k != "all", "--negative-class takes one class, not 'all'");
    try {
      g.negative_class = class_labels(model, k, 1)[0].item<int64_t>();
    } catch (const Error& e) {
      fail("--negative-class: ", e.what());
    }
  }
  parse_cfg_modifiers(a, g);
  if (a.has("dynamic-threshold")) {
    g.threshold = a.number("dynamic-threshold");
    check(g.threshold > 0 && g.threshold < 1, "--dynamic-threshold must be a percentile in (0, 1), e.g. 0.995 (got ",
          a.str("dynamic-threshold"), ")");
  }
  if (a.has("dynamic-threshold-max")) {
    check(a.has("dynamic-threshold"), "--dynamic-threshold-max needs --dynamic-threshold");
    g.threshold_max = a.str("dynamic-threshold-max") == "inf" ? INFINITY : a.number("dynamic-threshold-max");
    check(g.threshold_max >= 1, "--dynamic-threshold-max must be >= 1 (got ", a.str("dynamic-threshold-max"), ")");
  }
  for (const char* o : {"cads-tau", "cads-psi"}) check(!a.has(o) || a.has("cads-noise"), "--", o, " needs --cads-noise");
  if (a.has("cads-noise")) {
    check(labelled, "--cads-noise needs ", needs);
    check(dynamic_cast<NetDenoiser*>(model.denoiser.get()) != nullptr,
          "--cads-noise needs a network model (it noises the network's class embedding), not ", model.description);
    CADSOptions c;
    c.noise_scale = a.number("cads-noise");
    check(c.noise_scale > 0, "--cads-noise must be positive (got ", a.str("cads-noise"), ")");
    std::tie(c.tau1, c.tau2) = number_pair(a, "cads-tau", false);
    check(c.tau1 >= 0 && c.tau1 < c.tau2 && c.tau2 <= 1, "--cads-tau needs 0 <= TAU1 < TAU2 <= 1 (got ",
          a.str("cads-tau"), ")");
    c.psi = a.number("cads-psi");
    check(c.psi >= 0 && c.psi <= 1, "--cads-psi must be in [0, 1] (got ", a.str("cads-psi"), ")");
    g.cads = c;
    g.cads_seed = seed ^ 0x9E3779B97F4A7C15ull;  // independent of the start noise drawn from `seed`
  }
  parse_attention_rules(a, g, dynamic_cast<NetDenoiser*>(model.denoiser.get()) != nullptr, model.description);

  check(a.has("autoguidance") == a.has("guide-model"), "--autoguidance and --guide-model go together");
  if (a.has("guide-model")) {
    const std::string path = a.str("guide-model");
    check_file("guide-model", path);
    LoadedModel guide;
    try {
      guide = load_model(path, "", "");
    } catch (const Error& e) {
      fail("--guide-model: ", e.what());
    }
    check_guide_model(*model.denoiser, model.sample_shape, model.num_classes, *guide.denoiser, guide.sample_shape,
                      guide.num_classes, "--guide-model " + path);
    g.autoguidance = finite_number(a, "autoguidance");
    g.guide_model = guide.denoiser;
    g.guide_model_name = path;
  }

  check(!a.has("guide-classifier") || a.has("classifier-guidance"), "--guide-classifier needs --classifier-guidance");
  g.classifier_guidance = finite_number(a, "classifier-guidance");
  if (g.classifier_guidance != 0) {
    check(labelled, "--classifier-guidance needs ", needs);
    const std::string path = a.has("guide-classifier")
                                 ? a.str("guide-classifier")
                                 : std::string(TWEEDIE_SOURCE_DIR) + "/models/fashion_mnist_noisy_classifier.safetensors";
    g.guide_classifier = load_guide_classifier("guide-classifier", path, model, true);
  }

  for (const char* o : {"loss-scale", "loss-target", "loss-classifier", "loss-reference", "loss-factor"})
    check(!a.has(o) || a.has("loss-guidance"), "--", o, " needs --loss-guidance");
  if (a.has("loss-guidance")) {
    const std::string kind = a.str("loss-guidance");
    g.loss_guidance = finite_number(a, "loss-scale");
    if (kind != "reference")
      for (const char* o : {"loss-reference", "loss-factor"})
        check(!a.has(o), "--", o, " is for --loss-guidance reference");
    if (kind == "classifier") {
      check(labelled, "--loss-guidance classifier needs ", needs);
      check(!a.has("loss-target"), "--loss-target is for --loss-guidance brightness");
      const std::string path = a.has("loss-classifier") ? a.str("loss-classifier") : default_classifier_path();
      g.loss = classifier_loss(load_guide_classifier("loss-classifier", path, model, false));
      g.loss_name = "classifier";
    } else if (kind == "brightness") {
      check(!a.has("loss-classifier"), "--loss-classifier is for --loss-guidance classifier");
      const double target = finite_number(a, "loss-target");
      g.loss = brightness_loss(target);
      g.loss_name = "brightness " + a.str("loss-target");
    } else if (kind == "reference") {
      check(!a.has("loss-classifier"), "--loss-classifier is for --loss-guidance classifier");
      check(!a.has("loss-target"), "--loss-target is for --loss-guidance brightness");
      check(a.has("loss-reference"), "--loss-guidance reference needs --loss-reference IMAGE");
      const torch::Tensor ref = load_input_images(a.str("loss-reference"), model, "--loss-reference");
      check(ref.size(0) == 1, "--loss-reference: give one image (", a.str("loss-reference"), " holds ", ref.size(0), ")");
      const int64_t f = a.integer("loss-factor");
      check(f >= 1, "--loss-factor must be >= 1 (got ", f, ")");
      check(f == 1 || (model.image && model.sample_shape[1] % f == 0 && model.sample_shape[2] % f == 0),
            "--loss-factor ", f, " must divide the model's image size (", c10::IntArrayRef(model.sample_shape), ")");
      g.loss = reference_loss(ref[0], f);
      g.loss_name = "reference " + a.str("loss-reference") + (f > 1 ? " pooled " + std::to_string(f) : "");
    } else {
      fail("--loss-guidance: unknown loss '", kind, "' (classifier, brightness, reference)");
    }
  }
  return g;
}

}  // namespace tweedie::cli
