// LEDITS++ (Brack et al. 2024, "LEDITS++: Limitless Image Editing using
// Text-to-Image Models"; diffusers' LEditsPPPipelineStableDiffusion): a real
// image is inverted by edit-friendly DDPM inversion (ddpm_inversion.cpp)
// under the source prompt (the empty one when none is given) with CFG at w,
// and decoded with the stored noises under the same guided model plus
// SEGA's direction toward the target prompt (sega.h), kept only where the
// target's changed words attend and where the direction is large (the
// intersect mask; --ledits-mask attention | channel for the others). With the
// concept's scale at 0 the decoding is the inversion's own model, so the
// image comes back exactly. The concept's tokens are the target prompt's
// words the source prompt lacks (all of its words when none differ).
// Strength 0.85: the paper's skip of the first 15 % of the schedule.
// Verified in tests/test_ledits.cpp.
#pragma once
#include "tweedie/edit/edit_method.h"

namespace tweedie {

// The edit (a registered method, "ledits"); r.options: ledits-scale,
// ledits-threshold, ledits-mask, eta.
EditResult ledits_pp(const EditRequest& r);

}  // namespace tweedie
