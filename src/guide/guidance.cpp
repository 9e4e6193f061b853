// make_guidance: the guidance rules composed around a base Denoiser in the
// order documented in guidance.h (CADS on the network, SAG, AutoGuidance,
// CFG with negative class, interval-gated schedule and rescale (with PAG in
// the same call), loss guidance, classifier guidance, dynamic thresholding).
// Verified in tests/test_guidance.cpp: neutral options return the base
// itself, the composed x0 equals the rules applied by hand in that order on
// the Gaussian mixture, and PAG + SAG + AutoGuidance + CFG + loss and
// classifier guidance compose on a network with every sampler.
#include "tweedie/guide/guidance.h"

#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/guide/autoguidance.h"
#include "tweedie/guide/classifier_guidance.h"
#include "tweedie/guide/dynamic_threshold.h"
#include "tweedie/guide/pag.h"
#include "tweedie/guide/sag.h"

namespace tweedie {

std::string GuidanceOptions::describe() const {
  std::ostringstream o;
  o << "cfg " << cfg;
  if (guides()) {
    if (negative_class >= 0) o << ", negative class " << negative_class;
    if (schedule != CFGSchedule::Constant) o << ", " << to_string(schedule) << " schedule";
    if (!interval.everything()) o << ", interval (" << interval.lo << ", " << interval.hi << "]";
    if (rescale > 0) o << ", rescale " << rescale;
  }
  if (pag != 0) o << ", PAG " << pag;
  if (sag != 0) o << ", SAG " << sag;
  if (autoguidance != 1.0) o << ", AutoGuidance " << autoguidance << (guide_model_name.empty() ? "" : " from ") << guide_model_name;
  if (loss_guidance != 0) o << ", loss guidance " << loss_guidance << " (" << loss_name << ")";
  if (classifier_guidance != 0) o << ", classifier guidance " << classifier_guidance;
  if (cads) o << ", CADS tau " << cads->tau1 << "-" << cads->tau2 << " noise " << cads->noise_scale << " psi " << cads->psi;
  if (threshold > 0) {
    o << ", dynamic threshold " << threshold;
    if (std::isfinite(threshold_max)) o << " max " << threshold_max;
  }
  return o.str();
}

DenoiserPtr make_guidance(DenoiserPtr base, const GuidanceOptions& g) {
  check(base != nullptr, "make_guidance: no base denoiser");
  check(std::isfinite(g.cfg), "cfg scale must be finite (got ", g.cfg, ")");
  check(g.negative_class >= -1, "negative class must be >= 0 (got ", g.negative_class, ")");
  check(g.rescale >= 0 && g.rescale <= 1, "cfg rescale must be in [0, 1] (got ", g.rescale, ")");
  g.interval.validate();
  for (auto [v, name] : {std::pair{g.pag, "PAG"}, {g.sag, "SAG"}, {g.autoguidance, "AutoGuidance"},
                         {g.classifier_guidance, "classifier guidance"}, {g.loss_guidance, "loss guidance"}})
    check(std::isfinite(v), name, " scale must be finite (got ", v, ")");
  const auto net = std::dynamic_pointer_cast<NetDenoiser>(base);
  DenoiserPtr d = std::move(base);
  if (g.cads) {
    check(net != nullptr, "CADS needs a network model (its noise goes on the network's class embedding)");
    d = std::make_shared<CADSDenoiser>(net, *g.cads, g.cads_seed);
  }
  if (g.sag != 0) {
    check(net != nullptr, "SAG needs a network model (it reads the network's attention)");
    d = std::make_shared<SAGDenoiser>(d, net, SAGOptions{g.sag, g.sag_site});
  }
  if (g.autoguidance != 1.0) {
    check(g.guide_model != nullptr, "AutoGuidance needs a guide model");
    d = std::make_shared<AutoGuidanceDenoiser>(d, g.guide_model, g.autoguidance);
  }
  if (g.guides() || g.pag != 0) {
    CFGOptions o;
    o.scale = g.cfg;
    check(!g.negative || g.negative_class < 0, "give a negative condition or a negative class, not both");
    if (g.negative_class >= 0) o.negative = negative_class(g.negative_class);
    if (g.negative) o.negative = g.negative;
    o.rescale = g.rescale;
    if (g.schedule != CFGSchedule::Constant || !g.interval.everything()) {
      const Process* proc = &d->process();  // owned by d, which the CFGDenoiser keeps alive
      o.scale_at = [proc, w = g.cfg, k = g.schedule, iv = g.interval](double s) {
        return interval_cfg_scale(iv, scheduled_cfg_scale(k, w, *proc, s), s);
      };
    }
    if (g.pag != 0) {
      check(net != nullptr, "PAG needs a network model (it perturbs the network's attention)");
      d = std::make_shared<PAGDenoiser>(d, net, PAGOptions{g.pag, g.pag_sites}, std::move(o));
    } else {
      d = std::make_shared<CFGDenoiser>(d, std::move(o));
    }
  }
  if (g.loss_guidance != 0) {
    check(bool(g.loss), "loss guidance needs a loss");
    d = std::make_shared<LossGuidanceDenoiser>(d, g.loss, g.loss_guidance);
  }
  if (g.classifier_guidance != 0) {
    check(g.guide_classifier != nullptr, "classifier guidance needs a noise-conditional classifier");
    d = std::make_shared<ClassifierGuidanceDenoiser>(d, g.guide_classifier, g.classifier_guidance);
  }
  if (g.threshold != 0) d = std::make_shared<DynamicThresholdDenoiser>(d, g.threshold, g.threshold_max);
  return d;
}

}  // namespace tweedie
