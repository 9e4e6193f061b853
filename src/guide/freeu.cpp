// FreeU (Si et al. 2024): decoder backbone features amplified, skip features'
// low frequencies damped (guide/freeu.h). Verified in
// tests/test_attention_edits.cpp (FreeU suite).
#include "tweedie/guide/freeu.h"

#include <torch/fft.h>

#include <cmath>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/guide/guidance.h"

namespace tweedie {

FreeUOptions parse_freeu(const std::string& text) {
  if (text == "sd1") return {1.5, 1.6, 0.9, 0.2};
  if (text == "sd2") return {1.4, 1.6, 0.9, 0.2};
  if (text == "sdxl") return {1.3, 1.4, 0.9, 0.2};
  std::vector<double> v;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      v.push_back(std::stod(item, &used));
      check(used == item.size(), "");
    } catch (...) {
      v.clear();
      break;
    }
  }
  check(v.size() == 4, "--freeu takes B1,B2,S1,S2 (e.g. 1.5,1.6,0.9,0.2) or a preset (sd1, sd2, sdxl), got '", text, "'");
  for (double x : v) check(std::isfinite(x) && x >= 0, "--freeu: every factor must be finite and >= 0 (got '", text, "')");
  return {v[0], v[1], v[2], v[3]};
}

torch::Tensor freeu_fourier_filter(const torch::Tensor& x, double scale) {
  check(x.dim() == 4, "FreeU: the skip features must be [B, C, H, W], got ", x.sizes());
  if (scale == 1.0) return x;
  const int64_t H = x.size(2), W = x.size(3);
  auto f = torch::fft::fftshift(torch::fft::fftn(x.to(torch::kFloat32), c10::nullopt, {-2, -1}), {-2, -1});
  auto mask = torch::ones({H, W});
  const int64_t r = H / 2, c = W / 2;
  mask.slice(0, std::max<int64_t>(0, r - 1), r + 1).slice(1, std::max<int64_t>(0, c - 1), c + 1).fill_(scale);
  f = torch::fft::ifftshift(f * mask, {-2, -1});
  return torch::real(torch::fft::ifftn(f, c10::nullopt, {-2, -1})).to(x.scalar_type());
}

FreeUDenoiser::FreeUDenoiser(std::shared_ptr<NetDenoiser> inner, FreeUOptions o) : inner_(std::move(inner)), o_(o) {
  check(inner_ != nullptr, "FreeU needs a network model");
}

Prediction FreeUDenoiser::predict(const torch::Tensor& x, double s, const Cond& c) {
  Network& net = inner_->network();
  int64_t lowest = -1;  // the decoder's lowest resolution in this call (output_blocks.0.in)
  int fired = 0;
  // stage 0 at the lowest resolution, 1 at twice it, -1 otherwise
  auto stage = [&](int64_t h) { return h == lowest ? 0 : h == 2 * lowest ? 1 : -1; };
  ScopedHook backbone(net.hooks(), "output_blocks.*", [&](const std::string& site, const torch::Tensor& h,
                                                          const HookContext&) {
    if (site.size() < 3 || site.compare(site.size() - 3, 3, ".in") != 0 || h.dim() != 4) return h;
    if (site == "output_blocks.0.in") lowest = h.size(2);
    ++fired;
    const int k = stage(h.size(2));
    if (k < 0) return h;
    const double b = k == 0 ? o_.b1 : o_.b2;
    auto out = h.clone();
    const int64_t half = h.size(1) / 2;
    out.slice(1, 0, half).mul_(b);
    return out;
  });
  ScopedHook skip(net.hooks(), "skip.*", [&](const std::string&, const torch::Tensor& v, const HookContext&) {
    const int k = v.dim() == 4 ? stage(v.size(2)) : -1;
    return k < 0 ? v : freeu_fourier_filter(v, k == 0 ? o_.s1 : o_.s2);
  });
  Prediction p = inner_->predict(x, s, c);
  check(fired > 0, "FreeU: the ", net.arch(), " network has no decoder sites (output_blocks.K.in): FreeU needs a "
        "Stable Diffusion UNet");
  return p;
}

namespace {

DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions& g, const std::shared_ptr<NetDenoiser>& net) {
  check(inner == net, "FreeU goes directly on the network");
  return std::make_shared<FreeUDenoiser>(net, parse_freeu(g.text("freeu")));
}

std::string describe(const GuidanceOptions& g) {
  const FreeUOptions o = parse_freeu(g.text("freeu"));
  std::ostringstream out;
  out << ", FreeU b " << o.b1 << "/" << o.b2 << " s " << o.s1 << "/" << o.s2;
  return out.str();
}

// Innermost: it changes the network's own forward pass.
GuidanceRuleRegistrar reg(GuidanceRuleInfo{"freeu", "FreeU: decoder backbone features amplified, skip features' low "
                                                    "frequencies damped",
                                           "Si et al. 2024, FreeU", 5, build, describe}
                              .option(MethodOption::text("freeu", "",
                                                         "FreeU B1,B2,S1,S2 (e.g. 1.5,1.6,0.9,0.2) or a preset: sd1, "
                                                         "sd2, sdxl (Stable Diffusion UNets)"))
                              .on_when_given()
                              .needs_network("it scales the UNet's decoder features")
                              .for_text_models());

}  // namespace
}  // namespace tweedie
