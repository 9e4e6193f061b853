#include "guidance_args.h"

#include <cmath>
#include <fstream>
#include <set>

#include "edit_common.h"
#include "tweedie/core/error.h"
#include "tweedie/guide/autoguidance.h"
#include "tweedie/models/net_denoiser.h"
#include "tweedie/models/network_io.h"

namespace tweedie::cli {

namespace {

// The flags of the registered rules' options (not --cfg: each command owns
// it, with its own default). text_models: only what prompt-conditioned
// latent models take.
std::vector<Args::Opt> rule_flags(bool text_models) {
  std::vector<Args::Opt> out;
  for (const GuidanceRuleInfo* r : guidance_rules()) {
    if (text_models ? !r->text_models : r->prompts_only) continue;
    for (const MethodOption& o : r->options) {
      if (o.name == "cfg") continue;
      if (text_models && r->resource(o.name) == GuidanceResource::ClassIndex) continue;  // class labels
      std::string help = o.help;
      if (const std::string range = o.range_text(); !range.empty()) help += " (" + range + ")";
      if (o.name == r->switch_name()) help += " [" + r->reference + "]";
      out.push_back({o.name, "", false, help, o.default_text()});
    }
  }
  return out;
}

// Every registered option given on the command line, into g.
void set_given(const Args& a, GuidanceOptions& g, bool text_models) {
  for (const Args::Opt& o : rule_flags(text_models))
    if (a.has(o.name)) g.set(o.name, a.str(o.name));
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

// What the rules' path and class options load, checked against the model;
// `given`: the options given on the command line (the others load their defaults).
std::any resolve(const LoadedModel& model, const std::set<std::string>& given, const std::string& option,
                 const std::string& text, GuidanceResource kind) {
  const bool dflt = !given.count(option);
  switch (kind) {
    case GuidanceResource::ClassIndex: {
      check(text != "all", "--", option, " takes one class, not 'all'");
      try {
        return class_labels(model, text, 1)[0].item<int64_t>();
      } catch (const Error& e) {
        fail("--", option, ": ", e.what());
      }
    }
    case GuidanceResource::Model: {
      check_file(option, text);
      LoadedModel guide;
      try {
        guide = load_model(text, "", "");
      } catch (const Error& e) {
        fail("--", option, ": ", e.what());
      }
      check_guide_model(*model.denoiser, model.sample_shape, model.num_classes, *guide.denoiser, guide.sample_shape,
                        guide.num_classes, "--" + option + " " + text);
      return guide.denoiser;
    }
    case GuidanceResource::NoisyClassifier:
      return load_guide_classifier(option, dflt ? std::string(TWEEDIE_SOURCE_DIR) + "/" + text : text, model, true);
    case GuidanceResource::Classifier:
      return load_guide_classifier(option, dflt ? default_classifier_path() : text, model, false);
    case GuidanceResource::Image:
      return load_input_images(text, model, "--" + option);
    case GuidanceResource::None:
      break;
  }
  fail("internal: --", option, " loads nothing");
}

}  // namespace

std::vector<Args::Opt> guidance_opts() { return rule_flags(false); }

std::vector<Args::Opt> sd_guidance_opts() { return rule_flags(true); }

GuidanceOptions sd_guidance_options(const Args& a, double cfg) {
  GuidanceOptions g(cfg);
  g.condition_from = "a prompt";
  set_given(a, g, true);
  return g;
}

GuidanceOptions guidance_options(const Args& a, const LoadedModel& model, double cfg, bool labelled,
                                 const std::string& needs, uint64_t seed) {
  GuidanceOptions g(cfg);
  g.conditional = labelled;
  g.condition_from = needs;
  g.seed = seed ^ 0x9E3779B97F4A7C15ull;  // CADS's noise, independent of the start noise drawn from `seed`
  set_given(a, g, false);
  std::set<std::string> given;
  for (const Args::Opt& o : guidance_opts())
    if (a.has(o.name)) given.insert(o.name);
  g.resolve = [model, given](const std::string& option, const std::string& text, GuidanceResource kind) {
    return resolve(model, given, option, text, kind);
  };
  make_guidance(model.denoiser, g);  // every check now, before any work; loaded files are kept in g
  return g;
}

}  // namespace tweedie::cli
