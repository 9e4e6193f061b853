// SEG (seg.h): query blurring for PAG's batched perturbed branch. Verified in
// tests/test_guidance.cpp (SEG*): sigma = inf gives every perturbed row the
// mean query and leaves the others bit for bit; a constant query is a fixed
// point of any blur; the guided x0 equals the formula with the perturbed
// branch computed separately through a hand-installed hook.
#include "tweedie/guide/seg.h"

#include <cmath>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/guide/guidance.h"
#include "tweedie/guide/sag.h"

namespace tweedie {

torch::Tensor blur_queries(const torch::Tensor& q, int64_t batch, int64_t first, double sigma, int64_t height,
                           int64_t width) {
  check(q.dim() == 4 && q.size(0) == batch && first >= 0 && first <= batch, "SEG: queries ", q.sizes(),
        " are not [batch ", batch, ", heads, tokens, dim]");
  check(sigma > 0, "SEG: blur sigma must be positive (got ", sigma, ")");
  if (first == batch) return q;
  const int64_t heads = q.size(1), L = q.size(2), d = q.size(3);
  auto rows = q.narrow(0, first, batch - first);
  torch::Tensor blurred;
  if (std::isinf(sigma)) {
    blurred = rows.mean(2, true).expand_as(rows);
  } else {
    const int64_t f = std::llround(std::sqrt(double(height * width) / double(L)));
    check(f >= 1 && height % f == 0 && width % f == 0 && (height / f) * (width / f) == L, "SEG: ", L,
          " query tokens do not tile a ", height, "x", width, " image");
    const int64_t h = height / f, w = width / f;
    const int64_t six = int64_t(std::ceil(6 * sigma));
    int64_t kernel = six + 1 - six % 2;
    kernel = std::min(kernel, 2 * std::min(h, w) - 1);  // reflect padding needs the kernel inside the grid
    auto grid = rows.permute({0, 1, 3, 2}).reshape({batch - first, heads * d, h, w});
    blurred = gaussian_blur(grid, kernel, sigma).reshape({batch - first, heads, d, L}).permute({0, 1, 3, 2});
  }
  return torch::cat({q.narrow(0, 0, first), blurred.to(q.scalar_type())});
}

AttentionPerturbation seg_perturbation(double sigma) {
  check(sigma > 0, "SEG: blur sigma must be positive (got ", sigma, ")");
  AttentionPerturbation p;
  p.name = "SEG";
  p.suffix = ".q";
  p.apply = [sigma](const torch::Tensor& q, int64_t batch, int64_t first, const torch::Tensor& x) {
    check(x.dim() == 4, "SEG needs image-shaped samples [N, C, H, W], got ", x.sizes());
    return blur_queries(q, batch, first, sigma, x.size(2), x.size(3));
  };
  return p;
}

namespace {

DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions& g, const std::shared_ptr<NetDenoiser>& net) {
  CFGOptions cfg = cfg_options(g, inner->process());
  PAGOptions o;
  o.scale = g.number("seg");
  if (g.has("seg-sites")) o.sites = attention_sites(g.text("seg-sites"), "seg-sites");
  o.perturbation = seg_perturbation(g.number("seg-blur-sigma"));
  return std::make_shared<PAGDenoiser>(std::move(inner), net, std::move(o), std::move(cfg));
}

std::string describe(const GuidanceOptions& g) {
  std::ostringstream o;
  o << ", SEG " << g.number("seg") << " sigma " << g.number("seg-blur-sigma");
  return o.str();
}

// CFG's place: like PAG, its one call does CFG's part too.
GuidanceRuleRegistrar reg(
    GuidanceRuleInfo{"seg", "smoothed energy guidance: away from blurred self-attention queries", "Hong 2024", 40,
                     build, describe}
        .option(MethodOption{"seg", 0, "smoothed energy guidance scale, e.g. 3 (network models)"})
        .option(MethodOption{"seg-blur-sigma", INFINITY,
                             "std of the Gaussian blur of the queries over the token grid (inf: the mean query)"}
                    .at_least(0, true)
                    .or_infinite())
        .option(MethodOption::text("seg-sites", "middle block", "attention paths whose queries SEG blurs, comma-separated"))
        .needs_network("it works on the network's attention")
        .for_text_models()
        .does_the_work_of("cfg"));

}  // namespace
}  // namespace tweedie
