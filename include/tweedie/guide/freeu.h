// FreeU (Si, Huang, Jiang & Liu 2024, "FreeU: Free Lunch in Diffusion
// U-Net", CVPR): at the first two stages of the UNet's decoder, the
// backbone features entering each block are amplified on their first half
// of channels (b1, b2 > 1 strengthen the denoising backbone) and the skip
// features are damped at their lowest frequencies (s1, s2 < 1 scale the
// 2x2 centre of the shifted 2-D Fourier spectrum, the box of half-width 1
// around the zero frequency), as diffusers' apply_freeu does. Stage 0 is the
// decoder's lowest resolution (the middle block's), stage 1 twice it.
//
// It acts through two hook sites of the SD UNet: "output_blocks.K.in" (the
// backbone h before the skip is concatenated) and "skip.J" (that block's
// skip), for the calls of the rule's denoiser only. Recommended values
// (diffusers' docs): SD 1.x b1 1.5, b2 1.6, s1 0.9, s2 0.2; SD 2.x 1.4, 1.6,
// 0.9, 0.2; SDXL 1.3, 1.4, 0.9, 0.2 (the presets sd1, sd2, sdxl).
// Verified in tests/test_attention_edits.cpp (FreeU suite, on the test SD UNet): the filter on closed
// forms (scale 1 is the identity, a constant image is scaled, the Nyquist
// checkerboard is untouched); b = s = 1 is the plain model; the rule equals
// hand-installed hooks on the test UNet's sites.
#pragma once
#include <memory>
#include <string>

#include <torch/types.h>

#include "tweedie/models/net_denoiser.h"

namespace tweedie {

struct FreeUOptions {
  double b1 = 1.5, b2 = 1.6, s1 = 0.9, s2 = 0.2;
};

// "B1,B2,S1,S2" or a preset (sd1, sd2, sdxl); Error naming --freeu.
FreeUOptions parse_freeu(const std::string& text);

// x [B, C, H, W]: the frequencies in the 2 x 2 box around zero (after
// fftshift: rows and columns H/2 - 1 .. H/2, W/2 - 1 .. W/2) scaled by `scale`.
torch::Tensor freeu_fourier_filter(const torch::Tensor& x, double scale);

class FreeUDenoiser : public Denoiser {
 public:
  FreeUDenoiser(std::shared_ptr<NetDenoiser> inner, FreeUOptions o);
  const Process& process() const override { return inner_->process(); }
  Prediction predict(const torch::Tensor& x, double s, const Cond& c) override;

 private:
  std::shared_ptr<NetDenoiser> inner_;
  FreeUOptions o_;
};

}  // namespace tweedie
