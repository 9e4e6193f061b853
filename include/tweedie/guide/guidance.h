// Guidance rules and the one builder that composes them around a base
// Denoiser. Each rule lives in its own file and registers itself there, like
// samplers:
//
//   GuidanceRuleRegistrar reg(GuidanceRuleInfo{"sag", "one line", "Hong et al. 2023", 20, build, describe}
//                                 .option(MethodOption{"sag", 0, "scale"})
//                                 .option(MethodOption::text("sag-site", "", "attention path"))
//                                 .needs_network("it reads the network's attention"));
//
// declaring its name, its place in the composition order, its options (the
// first is its switch: the rule is off at the switch's neutral value, and
// its other options need it), what it needs (a network, conditional samples)
// and how it describes itself. GuidanceOptions holds the values by option
// name; commands build their flags and help from this registry
// (apps/tweedie/guidance_args.cpp) and make_guidance validates and builds.
//
// The order, inside out (the numbers the rules register):
//   10 CADS (cads.h): noise on the class embedding inside each network call
//      (rows with a real class only), so it sits directly on the network.
//   20 SAG (sag.h): per row, eps + s_sag (eps - eps(blurred re-noised x)),
//      from the network's own attention map, so every branch outside (CFG's
//      two, PAG's perturbed one) gets its own term.
//   30 AutoGuidance (autoguidance.h): x0_bad + w_ag (x0 - x0_bad) per row,
//      the guide model given the same condition.
//   40 CFG (cfg.h): x0 = x0(neg) + w(s) (x0(c) - x0(neg)), where
//        neg   = the negative class or condition, or the null condition;
//        w(s)  = 1 outside the guidance interval (guidance_interval.h; only
//                the conditional branch is evaluated there), else the
//                scheduled scale 1 + (w - 1) f(tau(s)) (cfg_schedule.h);
//      then CFG-rescale with phi of the guided x0 toward the conditional x0's
//      std (cfg_rescale.h).
//   40 PAG (pag.h): the same rule plus s_pag (x0(c) - x0_perturbed(c)), all
//      branches in one network call; it absorbs CFG (does CFG's part) when on.
//   40 SEG (seg.h): PAG's call with the queries blurred instead.
//   40 APG (apg.h), TCFG (tcfg.h), CFG-Zero* (cfg_zero_star.h): CFG with another
//      combination of its two branches; like PAG they replace CFG when on
//      (one of the three at a time).
//   50 Loss guidance (loss_guidance.h): score - s grad_{x_t} L(x0_hat), the
//      gradient through everything inside (the guided x0).
//   60 Classifier guidance (classifier_guidance.h): score + s grad_{x_t}
//      log p(y | x_t) of a noise-conditional classifier; no gradient through
//      the denoiser, so it sits outside loss guidance's backward pass.
//   70 Dynamic thresholding (dynamic_threshold.h) of the final x0, outermost,
//      so it acts on exactly the x0 the sampler sees.
//
// Every rule is neutral at its default (scale 0; AutoGuidance's w = 1, like
// CFG's), is not built then, and make_guidance returns the base denoiser
// itself when all are.
// Verified in tests/test_guidance.cpp (GuidanceRegistry*, Compose*).
#pragma once
#include <any>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "tweedie/core/error.h"
#include "tweedie/core/method_options.h"
#include "tweedie/core/registry.h"
#include "tweedie/models/denoiser.h"

namespace tweedie {

// What the command line loads from a words option's text (a path or a class
// name) when a rule asks for the option's object and none was attached.
enum class GuidanceResource {
  None,
  Model,            // a model file -> DenoiserPtr (same process and sample shape as the model)
  NoisyClassifier,  // a noise-conditional classifier file -> std::shared_ptr<Classifier>
  Classifier,       // a classifier of clean images -> std::shared_ptr<Classifier>
  Image,            // an image (.png or .npy) of the model's sample shape -> torch::Tensor [N, ...]
  ClassIndex,       // a class name or index -> int64_t
};

// The values of the guidance options, by option name (the flag without "--"):
//   GuidanceOptions g(3);                 // CFG scale 3
//   g.set("cfg-schedule", "cosine").set("pag", 2).attach("guide-model", weak);
// Numbers are validated against the declaring rule's range on set(); words
// are read by the rule (errors name the option); objects (a guide model, a
// classifier, a loss, a negative condition) are attached, or resolved from
// the option's text by `resolve` (the command line sets it).
class GuidanceOptions {
 public:
  explicit GuidanceOptions(double cfg = 1.0);

  // Error for an option no rule declares or a value outside its range.
  GuidanceOptions& set(const std::string& option, double v);
  GuidanceOptions& set(const std::string& option, int v) { return set(option, double(v)); }
  // Words options take the text; number options parse it ("inf" where allowed).
  GuidanceOptions& set(const std::string& option, const std::string& text);
  GuidanceOptions& set(const std::string& option, const char* text) { return set(option, std::string(text)); }
  GuidanceOptions& attach(const std::string& option, std::any object);

  bool has(const std::string& option) const;  // set or attached
  double number(const std::string& option) const;  // set, else the declared default
  std::string text(const std::string& option) const;
  // The attached object, else the one `resolve` makes from the text (once);
  // Error naming the option when there is neither or its type differs.
  template <class T>
  T object(const std::string& option) const {
    const std::any& a = object_any(option);
    const T* p = std::any_cast<T>(&a);
    check(p != nullptr, "--", option, ": the attached object has the wrong type");
    return *p;
  }

  double cfg() const { return number("cfg"); }
  bool guides() const { return cfg() != 1.0; }  // CFG runs at all
  bool on(const std::string& rule) const;       // the rule's switch is set away from neutral

  // Context of the samples the guidance runs on (set by commands):
  uint64_t seed = 0;           // seed of rules that draw noise (CADS)
  bool conditional = true;     // the samples carry a condition (labels, prompts)
  std::string condition_from = "a condition";  // what supplies it, for errors ("--class")
  std::function<std::any(const std::string& option, const std::string& text, GuidanceResource kind)> resolve;

  // One line for logs and PNG metadata, e.g. "cfg 3, negative class 2, rescale 0.7".
  std::string describe() const;

 private:
  const std::any& object_any(const std::string& option) const;
  std::map<std::string, double> numbers_;
  std::map<std::string, std::string> texts_;
  mutable std::map<std::string, std::any> objects_;
};

// The network model under the rules, when the base is one.
class NetDenoiser;

using GuidanceBuildFn = DenoiserPtr (*)(DenoiserPtr inner, const GuidanceOptions& g,
                                        const std::shared_ptr<NetDenoiser>& net);
using GuidanceDescribeFn = std::string (*)(const GuidanceOptions& g);  // ", PAG 2"
using GuidanceOnFn = bool (*)(const GuidanceOptions& g);

struct GuidanceRuleInfo {
  std::string name;
  std::string description;  // one line
  std::string reference;    // paper
  double order = 0;         // composition place, inner first
  GuidanceBuildFn build = nullptr;
  GuidanceDescribeFn describe = nullptr;
  std::vector<MethodOption> options = {};  // the first is the switch
  double neutral = 0;                      // the switch's value that turns the rule off
  GuidanceOnFn on = nullptr;               // instead of the switch test (words switches)
  bool on_given = false;                   // on whenever its switch is given (at any value)
  std::string network_reason;              // non-empty: needs a network model, because ...
  bool conditional = false;                // its options need conditional samples
  bool needs_cfg = false;                  // a CFG variant: on only with --cfg other than 1
  bool text_models = false;                // offered for prompt-conditioned latent models
  bool prompts_only = false;               // offered for those only (it needs prompts or their UNets)
  bool class_labels = false;               // acts on class labels (not prompts)
  std::string absorbs;                     // a rule whose work it does while on (PAG: cfg)
  std::string off_hint;                    // why its options need the switch; "" = "needs --<switch>"
  std::vector<std::string> attachments = {};  // objects only (no flag), e.g. CFG's "negative"
  std::map<std::string, GuidanceResource> resources = {};

  GuidanceRuleInfo& option(MethodOption o) { options.push_back(std::move(o)); return *this; }
  GuidanceRuleInfo& off_at(double v) { neutral = v; return *this; }
  GuidanceRuleInfo& on_when(GuidanceOnFn f) { on = f; return *this; }
  GuidanceRuleInfo& on_when_given() { on_given = true; return *this; }
  GuidanceRuleInfo& needs_network(std::string why) { network_reason = std::move(why); return *this; }
  GuidanceRuleInfo& needs_condition() { conditional = true; return *this; }
  GuidanceRuleInfo& needs_guidance() { needs_cfg = true; return *this; }
  GuidanceRuleInfo& for_text_models() { text_models = true; return *this; }
  GuidanceRuleInfo& on_prompts() { text_models = prompts_only = true; return *this; }
  GuidanceRuleInfo& on_class_labels() { class_labels = true; return *this; }
  GuidanceRuleInfo& does_the_work_of(std::string rule) { absorbs = std::move(rule); return *this; }
  GuidanceRuleInfo& off_message(std::string m) { off_hint = std::move(m); return *this; }
  GuidanceRuleInfo& attachment(std::string name) { attachments.push_back(std::move(name)); return *this; }
  GuidanceRuleInfo& loads(const std::string& option, GuidanceResource r) { resources[option] = r; return *this; }

  const std::string& switch_name() const { return options.front().name; }
  const MethodOption* find_option(const std::string& name) const;
  GuidanceResource resource(const std::string& option) const;
  bool active(const GuidanceOptions& g) const;
};

template <>
Registry<GuidanceRuleInfo>& registry<GuidanceRuleInfo>();
using GuidanceRuleRegistrar = Registrar<GuidanceRuleInfo>;
// The rules in composition order (inner first).
std::vector<const GuidanceRuleInfo*> guidance_rules();
// The rule declaring an option (flag or attachment); nullptr if none.
const GuidanceRuleInfo* guidance_rule_of(const std::string& option);

// base wrapped by the rules that are on, in order; Error naming the option
// at fault for impossible values (CADS, PAG or SAG on a non-network model, a
// threshold outside (0, 1), a guide model of another process, ...).
DenoiserPtr make_guidance(DenoiserPtr base, const GuidanceOptions& g);

// "A,B" -> two numbers (B may be "inf" when allow_inf); Error naming --option.
std::pair<double, double> parse_number_pair(const std::string& text, const std::string& option, bool allow_inf);

}  // namespace tweedie
