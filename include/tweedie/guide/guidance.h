// Guidance options and the one builder that composes the guidance rules
// around a base Denoiser. The order, inside out:
//
//   1. CADS (cads.h): noise on the class embedding inside each network call
//      (rows with a real class only), so it sits directly on the network.
//   2. SAG (sag.h): per row, eps + s_sag (eps - eps(blurred re-noised x)),
//      from the network's own attention map, so every branch outside (CFG's
//      two, PAG's perturbed one) gets its own term.
//   3. AutoGuidance (autoguidance.h): x0_bad + w_ag (x0 - x0_bad) per row,
//      the guide model given the same condition.
//   4. CFG (cfg.h): x0 = x0(neg) + w(s) (x0(c) - x0(neg)), where
//        neg   = the negative class, or the null condition;
//        w(s)  = 1 outside the guidance interval (guidance_interval.h; only
//                the conditional branch is evaluated there), else the
//                scheduled scale 1 + (w - 1) f(tau(s)) (cfg_schedule.h);
//      then CFG-rescale with phi of the guided x0 toward the conditional x0's
//      std (cfg_rescale.h). With PAG (pag.h) the same rule plus
//      s_pag (x0(c) - x0_perturbed(c)), all branches in one network call
//      (PAGDenoiser does the CFG part then).
//   5. Loss guidance (loss_guidance.h): score - s grad_{x_t} L(x0_hat), the
//      gradient through everything inside (the guided x0).
//   6. Classifier guidance (classifier_guidance.h): score + s grad_{x_t}
//      log p(y | x_t) of a noise-conditional classifier; no gradient through
//      the denoiser, so it sits outside loss guidance's backward pass.
//   7. Dynamic thresholding (dynamic_threshold.h) of the final x0, outermost,
//      so it acts on exactly the x0 the sampler sees.
//
// Every rule is neutral at its default (scale 0; AutoGuidance's w = 1, like
// CFG's), is not built then, and make_guidance returns the base denoiser
// itself when all are.
#pragma once
#include <functional>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "tweedie/guide/cads.h"
#include "tweedie/guide/loss_guidance.h"
#include "tweedie/guide/cfg_schedule.h"
#include "tweedie/guide/guidance_interval.h"
#include "tweedie/models/denoiser.h"

namespace tweedie {

struct GuidanceOptions {
  double cfg = 1.0;                               // CFG scale w (1 = no guidance)
  int64_t negative_class = -1;                    // -1 = the null class (plain CFG)
  std::function<Cond(const Cond&)> negative;       // CFG's negative condition from the positive one
                                                  // (e.g. a negative prompt); not with negative_class
  double rescale = 0.0;                           // CFG-rescale phi in [0, 1]
  GuidanceInterval interval;                      // default: every level
  CFGSchedule schedule = CFGSchedule::Constant;
  double threshold = 0.0;                         // dynamic-threshold percentile p in (0, 1); 0 = off
  double threshold_max = INFINITY;                // dynamic-threshold max value (diffusers' sample_max_value)
  std::optional<CADSOptions> cads;                // off unless set
  uint64_t cads_seed = 0;                         // seed of CADS's noise
  double pag = 0.0;                               // PAG scale s_pag (0 = off)
  std::vector<std::string> pag_sites;             // attention paths; empty = the middle block's
  double sag = 0.0;                               // SAG scale (0 = off)
  std::string sag_site;                           // attention path; empty = the middle block's
  double autoguidance = 1.0;                      // AutoGuidance w (1 = off)
  DenoiserPtr guide_model;                        // AutoGuidance's weaker model
  std::string guide_model_name;                   // for describe()
  double classifier_guidance = 0.0;               // classifier-guidance scale (0 = off)
  std::shared_ptr<Classifier> guide_classifier;   // noise-conditional classifier
  double loss_guidance = 0.0;                     // loss-guidance scale (0 = off)
  GuidanceLoss loss;                              // the loss on x0_hat
  std::string loss_name;                          // for describe(), e.g. "classifier", "brightness 0.5"

  bool guides() const { return cfg != 1.0; }      // CFG runs at all
  // One line for logs and PNG metadata, e.g. "cfg 3, negative class 2, rescale 0.7".
  std::string describe() const;
};

// base wrapped by the rules above; Error naming the option at fault for
// impossible values (CADS, PAG or SAG on a non-network model, a threshold
// outside (0, 1), a guide model of another process, ...).
DenoiserPtr make_guidance(DenoiserPtr base, const GuidanceOptions& g);

}  // namespace tweedie
