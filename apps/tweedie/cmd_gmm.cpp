// tweedie gmm: write Gaussian-mixture JSON files (the exact analytic models).
//   ring:   K equal components on a circle (2-D), one class each
//   random: K components in D dimensions, means ~ N(0, spread^2), per-dim
//           std uniform in [std-min, std-max], weights ~ Dirichlet(1), labels k mod classes
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdio>

#include "cli.h"
#include "tweedie/core/error.h"
#include "tweedie/models/gmm.h"

namespace tweedie::cli {
namespace {

int run(int argc, char** argv) {
  Args a("gmm", "ring|random [options] -o FILE.json",
         {{"components", "k", false, "number of components", "8"},
          {"dim", "", false, "dimension (random)", "64"},
          {"classes", "", false, "number of classes (random; ring: one per component)", "4"},
          {"radius", "", false, "ring radius", "2"},
          {"std", "", false, "ring component standard deviation", "0.15"},
          {"spread", "", false, "random: standard deviation of the means", "1"},
          {"std-min", "", false, "random: smallest component std", "0.1"},
          {"std-max", "", false, "random: largest component std", "0.5"},
          {"seed", "", false, "random seed", "0"},
          {"output", "o", false, "output JSON file", ""}});
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().size() == 1, "tweedie gmm: expected one kind, 'ring' or 'random'");
  check(a.has("output"), "tweedie gmm: --output is required");
  const std::string kind = a.positional()[0];
  const int K = a.integer("components");
  check(K >= 1 && K <= 100000, "tweedie gmm: --components must be in [1, 100000]");
  GaussianMixture m;
  if (kind == "ring") {
    const double r = a.number("radius"), sd = a.number("std");
    check(sd > 0, "tweedie gmm: --std must be positive");
    m.shape = {2};
    std::vector<double> mu;
    for (int k = 0; k < K; ++k) mu.push_back(r * std::cos(2 * M_PI * k / K)), mu.push_back(r * std::sin(2 * M_PI * k / K));
    m.means = torch::tensor(mu, torch::kFloat64).reshape({K, 2});
    m.variances = torch::full({K, 2}, sd * sd, torch::kFloat64);
    m.weights = torch::full({K}, 1.0 / K, torch::kFloat64);
    for (int k = 0; k < K; ++k) m.classes.push_back(k);
  } else if (kind == "random") {
    const int D = a.integer("dim"), C = a.integer("classes");
    const double lo = a.number("std-min"), hi = a.number("std-max");
    check(D >= 1 && D <= 1000000, "tweedie gmm: --dim must be in [1, 1000000]");
    check(C >= 0, "tweedie gmm: --classes must be >= 0");
    check(lo > 0 && hi >= lo, "tweedie gmm: need 0 < --std-min <= --std-max");
    auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(a.integer("seed")));
    m.shape = {D};
    m.means = at::randn({K, D}, gen, torch::kFloat64) * a.number("spread");
    auto sd = at::rand({K, D}, gen, torch::kFloat64) * (hi - lo) + lo;
    m.variances = sd * sd;
    auto w = -at::rand({K}, gen, torch::kFloat64).clamp_min(1e-12).log();  // Exp(1) -> Dirichlet(1)
    m.weights = w / w.sum();
    for (int k = 0; C > 0 && k < K; ++k) m.classes.push_back(k % C);
  } else {
    fail("tweedie gmm: unknown kind '", kind, "' (ring or random)");
  }
  m.save(a.str("output"));
  std::fprintf(stderr, "wrote %s (%d components, dim %ld)\n", a.str("output").c_str(), K, (long)m.dim());
  return 0;
}

CommandRegistrar reg({"gmm", "write a Gaussian-mixture model file (ring or random)", run});

}  // namespace
}  // namespace tweedie::cli
