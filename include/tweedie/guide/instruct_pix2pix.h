// InstructPix2Pix's dual classifier-free guidance (Brooks, Holynski & Efros
// 2023, "InstructPix2Pix: Learning to Follow Image Editing Instructions",
// CVPR, Eq. 3): the model is conditioned on an instruction c_T and on the
// image to edit c_I (its latent concatenated to the input: UNets with twice
// the latent channels in, found by structure), and
//   eps = eps(x, 0, 0) + s_I (eps(x, c_I, 0) - eps(x, 0, 0))
//                      + s_T (eps(x, c_I, c_T) - eps(x, c_I, 0)),
// with s_T the --cfg scale and s_I --image-cfg; "0" is the empty prompt for
// the text and a zero latent for the image (diffusers' pipeline). The three
// branches run as one batch {cond, image, uncond}. The combination is affine
// at a fixed state, so it is taken on x0 like CFG. s_I = 1 is CFG with the
// image-conditioned negative (x0 = x0(c_I) + s_T (x0(c_I, c_T) - x0(c_I))).
// The Stable Diffusion pipeline attaches the image branch's condition
// ("image-negative") for such models and sets s_I = 1.5 (diffusers'
// default) unless given. Verified in tests/test_attention_edits.cpp
// (InstructPix2Pix suite).
#pragma once
#include <functional>

#include "tweedie/guide/guidance_rule.h"

namespace tweedie {

class InstructPix2PixGuidance : public GuidanceRule {
 public:
  // text_negative(c): the condition with the empty prompt and c's image;
  // image_negative(c): the empty prompt and the zero image.
  InstructPix2PixGuidance(DenoiserPtr inner, double text_scale, double image_scale,
                          std::function<Cond(const Cond&)> text_negative,
                          std::function<Cond(const Cond&)> image_negative);

 protected:
  Prediction guide(const torch::Tensor& x, double s, const Cond& c) override;

 private:
  double text_scale_, image_scale_;
  std::function<Cond(const Cond&)> text_negative_, image_negative_;
};

}  // namespace tweedie
