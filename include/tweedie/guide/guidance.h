// Guidance options and the one builder that composes the guidance rules
// around a base Denoiser. The order, inside out:
//
//   1. CADS (cads.h): noise on the class embedding inside each network call
//      (rows with a real class only), so it sits directly on the network.
//   2. CFG (cfg.h): x0 = x0(neg) + w(s) (x0(c) - x0(neg)), where
//        neg   = the negative class, or the null condition;
//        w(s)  = 1 outside the guidance interval (guidance_interval.h; only
//                the conditional branch is evaluated there), else the
//                scheduled scale 1 + (w - 1) f(tau(s)) (cfg_schedule.h);
//      then CFG-rescale with phi of the guided x0 toward the conditional x0's
//      std (cfg_rescale.h).
//   3. Dynamic thresholding (dynamic_threshold.h) of the final x0, outermost,
//      so it acts on exactly the x0 the sampler sees.
//
// Every rule is neutral at its default, and make_guidance returns the base
// denoiser itself when all are.
#pragma once
#include <cmath>
#include <optional>
#include <string>

#include "tweedie/guide/cads.h"
#include "tweedie/guide/cfg_schedule.h"
#include "tweedie/guide/guidance_interval.h"
#include "tweedie/models/denoiser.h"

namespace tweedie {

struct GuidanceOptions {
  double cfg = 1.0;                               // CFG scale w (1 = no guidance)
  int64_t negative_class = -1;                    // -1 = the null class (plain CFG)
  double rescale = 0.0;                           // CFG-rescale phi in [0, 1]
  GuidanceInterval interval;                      // default: every level
  CFGSchedule schedule = CFGSchedule::Constant;
  double threshold = 0.0;                         // dynamic-threshold percentile p in (0, 1); 0 = off
  double threshold_max = INFINITY;                // dynamic-threshold max value (diffusers' sample_max_value)
  std::optional<CADSOptions> cads;                // off unless set
  uint64_t cads_seed = 0;                         // seed of CADS's noise

  bool guides() const { return cfg != 1.0; }      // CFG runs at all
  // One line for logs and PNG metadata, e.g. "cfg 3, negative class 2, rescale 0.7".
  std::string describe() const;
};

// base wrapped by the rules above; Error naming the option at fault for
// impossible values (CADS on a non-network model, a threshold outside (0, 1), ...).
DenoiserPtr make_guidance(DenoiserPtr base, const GuidanceOptions& g);

}  // namespace tweedie
