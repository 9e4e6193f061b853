// Frequency-Decoupled Guidance (frequency_decoupled_guidance.h). Verified in
// tests/test_guidance.cpp (FDG*): the pyramid sums back exactly and its
// bands sit where they should (a constant image is all coarsest band); equal
// scales are CFG exactly; a difference confined to the coarse band is guided
// with that band's scale alone; eta = 0 leaves each band's update orthogonal
// to x0_cond's band.
#include "tweedie/guide/frequency_decoupled_guidance.h"

#include <cmath>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/guide/apg.h"
#include "tweedie/guide/guidance.h"

namespace tweedie {
namespace {

torch::Tensor blur5(const torch::Tensor& x) {
  const int64_t C = x.size(1);
  auto k1 = torch::tensor({1.0, 4.0, 6.0, 4.0, 1.0}, x.options()) / 16.0;
  auto kh = k1.view({1, 1, 1, 5}).expand({C, 1, 1, 5}), kv = k1.view({1, 1, 5, 1}).expand({C, 1, 5, 1});
  // Reflection needs 2 pixels inside; smaller sides replicate.
  auto pad = [&](const torch::Tensor& t, std::vector<int64_t> p, int64_t side) {
    return torch::pad(t, p, side > 2 ? "reflect" : "replicate");
  };
  const torch::Tensor none;
  const std::vector<int64_t> one{1, 1}, zero{0, 0};
  auto h = torch::conv2d(pad(x, {2, 2, 0, 0}, x.size(3)), kh, none, one, zero, one, C);
  return torch::conv2d(pad(h, {0, 0, 2, 2}, x.size(2)), kv, none, one, zero, one, C);
}

torch::Tensor down(const torch::Tensor& x) {
  return torch::avg_pool2d(blur5(x), {2, 2}, {2, 2}, {0, 0}, /*ceil_mode=*/true, /*count_include_pad=*/false);
}

torch::Tensor up(const torch::Tensor& x, int64_t h, int64_t w) {
  return blur5(torch::upsample_bilinear2d(x, {h, w}, /*align_corners=*/false));
}

}  // namespace

std::vector<torch::Tensor> laplacian_pyramid(const torch::Tensor& x, int levels) {
  check(levels >= 1, "Laplacian pyramid: needs at least one level (got ", levels, ")");
  check(x.dim() == 4, "Laplacian pyramid: needs images [N, C, H, W], got ", x.sizes());
  std::vector<torch::Tensor> bands;
  torch::Tensor g = x;
  for (int k = 0; k + 1 < levels; ++k) {
    check(g.size(2) >= 2 && g.size(3) >= 2, "Laplacian pyramid: ", levels, " levels need images of at least ",
          1 << (levels - 1), " pixels a side, got ", x.size(2), "x", x.size(3));
    torch::Tensor next = down(g);
    bands.push_back(g - up(next, g.size(2), g.size(3)));
    g = next;
  }
  bands.push_back(g);
  return bands;
}

torch::Tensor from_laplacian_pyramid(const std::vector<torch::Tensor>& bands) {
  check(!bands.empty(), "Laplacian pyramid: no bands");
  torch::Tensor g = bands.back();
  for (size_t k = bands.size() - 1; k-- > 0;) g = bands[k] + up(g, bands[k].size(2), bands[k].size(3));
  return g;
}

FDGDenoiser::FDGDenoiser(DenoiserPtr inner, CFGOptions cfg, FDGOptions fdg)
    : CFGDenoiser(std::move(inner), cfg), scale_(cfg.scale), fdg_(std::move(fdg)) {
  check(!fdg_.lower_scales.empty(), "FDG: give the coarser bands' scales");
  for (double v : fdg_.lower_scales) check(std::isfinite(v), "FDG: band scales must be finite (got ", v, ")");
  check(fdg_.parallel >= 0 && fdg_.parallel <= 1, "FDG: the parallel weight must be in [0, 1] (got ", fdg_.parallel,
        ")");
  check(scale_ != 1.0, "FDG needs guidance: give --cfg other than 1 (the finest band's scale)");
}

torch::Tensor FDGDenoiser::combine(const torch::Tensor& x0_cond, const torch::Tensor& x0_neg, double w,
                                   const torch::Tensor&, double) {
  check(x0_cond.dim() == 4, "FDG needs image-shaped samples [N, C, H, W], got ", x0_cond.sizes());
  const int levels = int(fdg_.lower_scales.size()) + 1;
  const double f = (w - 1.0) / (scale_ - 1.0);  // the schedule's share of the full guidance at this level
  const auto cond = laplacian_pyramid(x0_cond.to(torch::kFloat64), levels);
  const auto neg = laplacian_pyramid(x0_neg.to(torch::kFloat64), levels);
  std::vector<torch::Tensor> guided;
  for (int k = 0; k < levels; ++k) {
    const double wk = k == 0 ? w : 1.0 + (fdg_.lower_scales[k - 1] - 1.0) * f;
    torch::Tensor d = cond[k] - neg[k];
    if (fdg_.parallel != 1.0) d = apg_update(d, cond[k], fdg_.parallel, 0.0);
    guided.push_back(cond[k] + d * (wk - 1.0));
  }
  return from_laplacian_pyramid(guided).to(x0_cond.scalar_type());
}

namespace {

std::vector<double> band_scales(const std::string& text) {
  std::vector<double> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    check(!item.empty() && end && *end == '\0' && std::isfinite(v), "--fdg: '", item, "' is not a number (give the "
          "coarser bands' scales, finest first, e.g. 5 or 7,5)");
    out.push_back(v);
  }
  check(!out.empty(), "--fdg: give the coarser bands' scales, finest first, e.g. 5 or 7,5");
  check(out.size() <= 6, "--fdg: at most 6 coarser bands (got ", out.size(), ")");
  return out;
}

DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions& g, const std::shared_ptr<NetDenoiser>&) {
  CFGOptions cfg = cfg_options(g, inner->process());
  return std::make_shared<FDGDenoiser>(std::move(inner), std::move(cfg),
                                       FDGOptions{band_scales(g.text("fdg")), g.number("fdg-parallel")});
}

std::string describe(const GuidanceOptions& g) {
  std::ostringstream o;
  o << ", FDG bands " << g.text("fdg");
  if (g.number("fdg-parallel") != 1) o << " parallel " << g.number("fdg-parallel");
  return o.str();
}

// CFG's place: it replaces CFG's combination of the two branches.
GuidanceRuleRegistrar reg(
    GuidanceRuleInfo{"fdg", "frequency-decoupled guidance: CFG per Laplacian-pyramid band, --cfg on the finest",
                     "Sadat et al. 2025", 40, build, describe}
        .option(MethodOption::text("fdg", "",
                                   "frequency-decoupled guidance: the guidance scales of the coarser Laplacian bands, "
                                   "finest first (--cfg is the finest band's), e.g. --cfg 10 --fdg 5"))
        .option(MethodOption{"fdg-parallel", 1,
                             "FDG: weight of each band update's part parallel to the conditional band (1 = off)"}
                    .in(0, 1))
        .on_when_given()
        .needs_condition()
        .needs_guidance()
        .for_text_models()
        .does_the_work_of("cfg"));

}  // namespace
}  // namespace tweedie
