// SAG, self-attention guidance (Hong et al. 2023):
//   eps = eps(x) + s_sag (eps(x) - eps(a x0_deg + s eps)),
//   x0_deg = mask * blur(x0) + (1 - mask) * x0, mask from the attention map
// (sag.h). Verified in tests/test_guidance.cpp: the blur against a direct
// convolution with a normalized 9-tap Gaussian, the mask on hand-made maps,
// the guided eps against the formula evaluated by hand with a capturing
// hook, and an empty mask (uniform attention) leaves the prediction alone.
#include "tweedie/guide/sag.h"

#include <cmath>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/nn/hooks.h"
#include "tweedie/guide/guidance.h"
#include "tweedie/guide/pag.h"

namespace tweedie {

torch::Tensor gaussian_blur(const torch::Tensor& x, int64_t kernel, double sigma) {
  check(x.dim() == 4, "gaussian blur: expected [N, C, H, W], got ", x.sizes());
  check(kernel >= 1 && kernel % 2 == 1 && sigma > 0, "gaussian blur: kernel ", kernel, " must be odd, sigma ", sigma,
        " positive");
  const int64_t C = x.size(1), r = kernel / 2;
  check(x.size(2) > r && x.size(3) > r, "gaussian blur: a ", kernel, "-tap kernel needs images larger than ", r,
        " pixels, got ", x.size(2), "x", x.size(3));
  auto t = torch::arange(-r, r + 1, x.options()).div(sigma);
  auto k1 = torch::exp(t * t * -0.5);
  k1 = k1 / k1.sum();
  auto h = torch::reflection_pad2d(x, {r, r, r, r});
  const std::vector<int64_t> one{1, 1}, zero{0, 0};
  h = torch::conv2d(h, k1.view({1, 1, 1, kernel}).expand({C, 1, 1, kernel}), torch::Tensor(), one, zero, one, C);
  return torch::conv2d(h, k1.view({1, 1, kernel, 1}).expand({C, 1, kernel, 1}), torch::Tensor(), one, zero, one, C);
}

torch::Tensor sag_mask(const torch::Tensor& probs, int64_t batch, int64_t height, int64_t width, double threshold) {
  check(probs.dim() == 3 && probs.size(1) == probs.size(2) && probs.size(0) % batch == 0,
        "SAG: attention probabilities ", probs.sizes(), " are not self-attention of a batch of ", batch);
  const int64_t heads = probs.size(0) / batch, L = probs.size(1);
  const int64_t f = std::llround(std::sqrt(double(height * width) / double(L)));
  check(f >= 1 && height % f == 0 && width % f == 0 && (height / f) * (width / f) == L, "SAG: an attention map of ",
        L, " tokens does not tile a ", height, "x", width, " image");
  auto received = probs.view({batch, heads, L, L}).mean(1).sum(1);  // [batch, L]: attention each token receives
  auto m = (received > threshold).to(torch::kFloat32).view({batch, 1, height / f, width / f});
  return m.repeat_interleave(f, 2).repeat_interleave(f, 3);
}

SAGDenoiser::SAGDenoiser(DenoiserPtr inner, std::shared_ptr<NetDenoiser> net, SAGOptions opt)
    : GuidanceRule(std::move(inner)), net_(std::move(net)), opt_(std::move(opt)) {
  check(inner_denoiser() != nullptr && net_ != nullptr, "SAG needs a network model (it reads the network's attention)");
  check(std::isfinite(opt_.scale), "SAG scale must be finite (got ", opt_.scale, ")");
  if (opt_.site.empty()) opt_.site = middle_attention_site(net_->network());
}

Prediction SAGDenoiser::guide(const torch::Tensor& x, double s, const Cond& c) {
  if (opt_.scale == 0) return inner(x, s, c);
  check(x.dim() == 4, "SAG needs image-shaped samples [N, C, H, W], got ", x.sizes());
  torch::Tensor probs;
  Prediction p = [&] {
    ScopedHook capture(net_->network().hooks(), opt_.site + ".probs",
                       [&](const std::string&, const torch::Tensor& a, const HookContext&) {
                         if (!probs.defined()) probs = a.detach();  // this call's first pass through the site
                         return a;
                       });
    return inner(x, s, c);
  }();
  check(probs.defined(), "SAG: the ", net_->network().arch(), " network has no self-attention at '", opt_.site,
        "' (sites are attention paths like mid.attn.0)");
  auto mask = sag_mask(probs, x.size(0), x.size(2), x.size(3)).to(x.options());
  const auto& x0 = p.x0();
  auto x0_deg = gaussian_blur(x0, opt_.blur_kernel, opt_.blur_sigma) * mask + x0 * (1 - mask);
  Prediction d = [&] {
    BranchScope branches({"degraded"});
    return inner(process().add_noise(x0_deg, p.eps(), s), s, c);
  }();
  auto eps = p.eps() + (p.eps() - d.eps()) * opt_.scale;
  return Prediction({PredKind::Eps}, eps, x, s, process());
}

}  // namespace tweedie

namespace tweedie {
namespace {

DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions& g, const std::shared_ptr<NetDenoiser>& net) {
  SAGOptions o;
  o.scale = g.number("sag");
  if (g.has("sag-site")) o.site = g.text("sag-site");
  return std::make_shared<SAGDenoiser>(std::move(inner), net, o);
}

std::string describe(const GuidanceOptions& g) {
  std::ostringstream o;
  o << ", SAG " << g.number("sag");
  return o.str();
}

GuidanceRuleRegistrar reg(GuidanceRuleInfo{"sag", "self-attention guidance: away from the blurred attended regions",
                                           "Hong et al. 2023", 20, build, describe}
                              .option(MethodOption{"sag", 0, "self-attention guidance scale, e.g. 0.75 (network models)"})
                              .option(MethodOption::text("sag-site", "middle block", "attention path whose map SAG reads"))
                              .needs_network("it works on the network's attention")
                              .for_text_models());

}  // namespace
}  // namespace tweedie
