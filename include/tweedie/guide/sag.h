// SAG, self-attention guidance (Hong et al. 2023, "Improving Sample Quality
// of Diffusion Models Using Self-Attention Guidance"; diffusers'
// StableDiffusionSAGPipeline): the weak branch sees the current state with
// the regions the model attends to blurred away. Per call, for each row
// with its own condition c:
//   A      = self-attention probabilities of the chosen (middle) block on
//            this pass, [heads, L, L]
//   mask   = 1 where mean_heads(sum_queries A) > 1 (a token that receives
//            more than the average attention), upsampled (nearest) from the
//            attention map to the image
//   x0_deg = mask * blur(x0) + (1 - mask) * x0,  blur = Gaussian, 9 taps,
//            sigma 1, reflect padding (diffusers' gaussian_blur_2d)
//   x_deg  = a(s) x0_deg + s eps      (re-noised with the predicted eps)
//   eps    = eps(x, c) + s_sag (eps(x, c) - eps(x_deg, c))
// The combination is in eps, as in the paper's Eq. 11 and diffusers (it is
// not affine in the state, so x0 form would differ).
//
// make_guidance puts SAG on the network (inside AutoGuidance, CFG and PAG),
// so under CFG every branch gets its own term: uncond and cond rows run in
// one batch, each degraded by its own attention map (diffusers degrades the
// unconditional branch only and adds its term to the CFG output; with CFG
// w the two agree up to the term's weight on the conditional branch). Two
// network calls per evaluation. The attention map size must divide the
// image: the factor is sqrt(H W / L). s_sag = 0 is not built.
// Verified in tests/test_guidance.cpp (SAG suite).
#pragma once
#include <string>

#include "tweedie/guide/guidance_rule.h"
#include "tweedie/models/net_denoiser.h"

namespace tweedie {

// x [N, C, H, W]: Gaussian blur with `kernel` taps (odd) and std sigma per
// channel, reflect padding.
torch::Tensor gaussian_blur(const torch::Tensor& x, int64_t kernel, double sigma);
// probs [batch*heads, L, L] -> float mask [batch, 1, H, W] as above.
torch::Tensor sag_mask(const torch::Tensor& probs, int64_t batch, int64_t height, int64_t width,
                       double threshold = 1.0);

struct SAGOptions {
  double scale = 0.0;  // s_sag
  std::string site;    // attention path; empty = middle_attention_site (pag.h)
  double blur_sigma = 1.0;
  int64_t blur_kernel = 9;
};

class SAGDenoiser : public GuidanceRule {
 public:
  SAGDenoiser(DenoiserPtr inner, std::shared_ptr<NetDenoiser> net, SAGOptions opt);

 private:
  Prediction guide(const torch::Tensor& x, double s, const Cond& c) override;
  std::shared_ptr<NetDenoiser> net_;
  SAGOptions opt_;
};

}  // namespace tweedie
