// make_guidance: the guidance rules composed around a base Denoiser in the
// order documented in guidance.h (CADS on the network, then CFG with negative
// class, interval-gated schedule and rescale, then dynamic thresholding).
// Verified in tests/test_guidance.cpp: neutral options return the base
// itself, and the composed x0 equals the rules applied by hand in that order
// on the Gaussian mixture.
#include "tweedie/guide/guidance.h"

#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/guide/cfg.h"
#include "tweedie/guide/dynamic_threshold.h"

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
  DenoiserPtr d = std::move(base);
  if (g.cads) {
    auto net = std::dynamic_pointer_cast<NetDenoiser>(d);
    check(net != nullptr, "CADS needs a network model (its noise goes on the network's class embedding)");
    d = std::make_shared<CADSDenoiser>(net, *g.cads, g.cads_seed);
  }
  if (g.guides()) {
    CFGOptions o;
    o.scale = g.cfg;
    if (g.negative_class >= 0) o.negative = negative_class(g.negative_class);
    o.rescale = g.rescale;
    if (g.schedule != CFGSchedule::Constant || !g.interval.everything()) {
      const Process* proc = &d->process();  // owned by d, which the CFGDenoiser keeps alive
      o.scale_at = [proc, w = g.cfg, k = g.schedule, iv = g.interval](double s) {
        return interval_cfg_scale(iv, scheduled_cfg_scale(k, w, *proc, s), s);
      };
    }
    d = std::make_shared<CFGDenoiser>(d, std::move(o));
  }
  if (g.threshold != 0) d = std::make_shared<DynamicThresholdDenoiser>(d, g.threshold, g.threshold_max);
  return d;
}

}  // namespace tweedie
