// Skip-Layer Guidance (skip_layer_guidance.h). Verified in
// tests/test_guidance.cpp (SLG*): the skipping branch equals the network with
// the chosen layers' residual-branch weights zeroed, the guided x0 is the
// formula, outside the step window the rule is plain CFG, and bad layers are
// an Error naming them.
#include "tweedie/guide/skip_layer_guidance.h"

#include <cmath>
#include <regex>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/guide/guidance.h"

namespace tweedie {

std::vector<std::string> skip_layer_paths(const Network& net) {
  // SD transformer blocks and DiT blocks, by module name; SD's UNet sits
  // under "unet." inside the text-conditioned network.
  static const std::regex layer(
      R"((?:^|.*\.)((?:input_blocks\.\d+|middle_block|output_blocks\.\d+)\.\d+\.transformer_blocks\.\d+|^blocks\.\d+)$)");
  std::vector<std::string> out;
  for (const auto& item : net.named_modules("", false)) {
    std::smatch m;
    if (std::regex_match(item.key(), m, layer)) out.push_back(m[1].str());
  }
  return out;
}

std::string middle_skip_layer(const Network& net) {
  const std::string site = middle_attention_site(net);
  const size_t dot = site.rfind('.');
  check(dot != std::string::npos && dot > 0, "SLG: no layer around the attention site '", site, "'");
  // tweedie's UNet: "mid.attn.0" is itself the attention block; its stage "mid.attn" holds the branches.
  return site.substr(0, dot);
}

std::vector<std::string> skip_layers(const Network& net, const std::string& text, const std::string& option) {
  std::vector<std::string> out;
  std::vector<std::string> paths;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    check(!item.empty(), "--", option, ": empty layer in '", text, "'");
    if (item.find_first_not_of("0123456789") == std::string::npos) {
      if (paths.empty()) paths = skip_layer_paths(net);
      check(!paths.empty(), "--", option, ": the ", net.arch(), " network has no numbered transformer layers; give "
            "layer paths (e.g. mid.attn)");
      const long k = std::stol(item);
      check(k < long(paths.size()), "--", option, ": layer ", k, " is beyond the ", net.arch(), " network's ",
            paths.size(), " transformer layers (0..", long(paths.size()) - 1, ")");
      out.push_back(paths[size_t(k)]);
    } else {
      out.push_back(item);
    }
  }
  check(!out.empty(), "--", option, ": no layer in '", text, "'");
  return out;
}

PAGOptions skip_layer_options(double scale, std::vector<std::string> layers, double start, double stop) {
  check(std::isfinite(scale), "SLG scale must be finite (got ", scale, ")");
  check(start >= 0 && start < stop && stop <= 1, "SLG: the step window must satisfy 0 <= start < stop <= 1 (got ",
        start, ",", stop, ")");
  PAGOptions o;
  o.scale = scale;
  for (std::string& l : layers) {
    check(!l.empty() && l.back() != '*', "SLG: '", l, "' is not a layer path");
    o.sites.push_back(l + ".*");
  }
  AttentionPerturbation& p = o.perturbation;
  p.name = "SLG";
  p.what = "transformer layer";
  p.sites_are = "layer paths like middle_block.1.transformer_blocks.0 or indices";
  // "<layer>.<m>.out": a residual branch directly inside one of the layers.
  p.acts_on = [layers](const std::string& at) {
    for (const std::string& l : layers) {
      if (at.size() <= l.size() + 5 || at.compare(0, l.size() + 1, l + ".") != 0) continue;
      const std::string rest = at.substr(l.size() + 1);
      if (rest.size() > 4 && rest.compare(rest.size() - 4, 4, ".out") == 0 &&
          rest.find('.') == rest.size() - 4)
        return true;
    }
    return false;
  };
  p.apply = [](const torch::Tensor& v, int64_t batch, int64_t first, const torch::Tensor&) {
    check(v.size(0) == batch, "SLG: a residual branch of ", v.size(0), " rows in a call of ", batch);
    return torch::cat({v.narrow(0, 0, first), torch::zeros_like(v.narrow(0, first, batch - first))});
  };
  o.when = [start, stop](const HookContext& ctx) {
    if (ctx.step < 0 || ctx.steps <= 0) return true;
    const double f = double(ctx.step) / double(ctx.steps);
    return f >= start && f < stop;
  };
  return o;
}

namespace {

DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions& g, const std::shared_ptr<NetDenoiser>& net) {
  check(net != nullptr, "--slg needs a network model (it skips the network's layers)");
  CFGOptions cfg = cfg_options(g, inner->process());
  const Network& nw = net->network();
  auto layers = g.has("slg-layers") ? skip_layers(nw, g.text("slg-layers"), "slg-layers")
                                    : std::vector<std::string>{middle_skip_layer(nw)};
  const auto [start, stop] = parse_number_pair(g.text("slg-window"), "slg-window", false);
  return std::make_shared<PAGDenoiser>(std::move(inner), net,
                                       skip_layer_options(g.number("slg"), std::move(layers), start, stop),
                                       std::move(cfg));
}

std::string describe(const GuidanceOptions& g) {
  std::ostringstream o;
  o << ", SLG " << g.number("slg") << " steps " << g.text("slg-window");
  if (g.has("slg-layers")) o << " layers " << g.text("slg-layers");
  return o.str();
}

// CFG's place: like PAG, its one call does CFG's part too.
GuidanceRuleRegistrar reg(
    GuidanceRuleInfo{"slg", "skip-layer guidance: away from the model with transformer layers skipped",
                     "Stability AI 2024 (SD 3.5)", 40, build, describe}
        .option(MethodOption{"slg", 0, "skip-layer guidance scale, e.g. 2.8 (network models)"})
        .option(MethodOption::text("slg-layers", "the middle block's",
                                   "layers SLG skips: paths or indices into the transformer layers, comma-separated "
                                   "(e.g. 7,8,9)"))
        .option(MethodOption::text("slg-window", "0.01,0.2",
                                   "SLG acts on steps i with START <= i / steps < STOP (START,STOP)"))
        .needs_network("it skips the network's layers")
        .for_text_models()
        .does_the_work_of("cfg"));

}  // namespace
}  // namespace tweedie
