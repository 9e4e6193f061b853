// Attend-and-Excite (attend_and_excite.h). Verified in
// tests/test_attention_guidance.cpp: the loss on hand-made maps (a subject
// with one sharp peak has m = its smoothed peak, the loss is the worst
// subject's), the update lowers the loss on the test UNet, and bad words.
#include "tweedie/guide/attend_and_excite.h"

#include <cmath>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/edit/paired_sampling.h"
#include "tweedie/guide/guidance.h"

namespace tweedie {

torch::Tensor attend_and_excite_loss(const std::vector<CrossAttentionLayer>& maps,
                                     const std::vector<std::vector<int64_t>>& subjects, int64_t last_token,
                                     int64_t lh) {
  check(!maps.empty() && !subjects.empty(), "Attend-and-Excite: no maps or no subjects");
  int64_t side = 0, w = 0;
  const torch::Tensor A = quarter_side_maps(maps, lh, side, w);  // [N, h*w, Lk]
  const int64_t n = A.size(0);
  check(last_token >= 1 && last_token < A.size(2), "Attend-and-Excite: text tokens 1..", last_token, " outside ",
        A.size(2), " context tokens");
  auto T = torch::softmax(A.narrow(2, 1, last_token) * 100, 2);  // text tokens 1..last
  std::vector<torch::Tensor> losses;
  for (const auto& tokens : subjects) {
    torch::Tensor map;
    for (int64_t t : tokens) {
      check(t >= 1 && t <= last_token, "Attend-and-Excite: token ", t, " is not a text token (1..", last_token, ")");
      auto col = T.select(2, t - 1);
      map = map.defined() ? map + col : col;
    }
    auto img = smooth_attention(map.view({n, 1, side, w}));
    losses.push_back((1 - std::get<0>(img.reshape({n, -1}).max(1))).clamp_min(0));
  }
  return std::get<0>(torch::stack(losses, 1).max(1));
}

int64_t last_text_token(const std::vector<PromptWord>& words) {
  int64_t last = 0;
  for (const PromptWord& w : words)
    for (int64_t p : w.positions) last = std::max(last, p);
  return last;
}

StateUpdate attend_and_excite(std::shared_ptr<NetDenoiser> net, std::vector<std::vector<int64_t>> subjects,
                              int64_t last_token, AttendExciteOptions o, int steps) {
  check(net != nullptr, "Attend-and-Excite needs a network model (it reads the cross-attention)");
  check(o.scale > 0 && std::isfinite(o.scale), "--attend-excite-scale must be positive (got ", o.scale, ")");
  check(o.until > 0 && o.until <= 1, "--attend-excite-until must be in (0, 1] (got ", o.until, ")");
  check(o.refine >= 0, "--attend-excite-refine must be >= 0");
  StateUpdate u;
  u.steps = std::max(1, int(std::lround(o.until * steps)));
  u.fn = [net, subjects, last_token, o](int step, int total, double s, const torch::Tensor& x, const Cond& c) {
    const int64_t lh = x.size(2);
    const AttentionLoss loss = [&](const std::vector<CrossAttentionLayer>& maps) {
      return attend_and_excite_loss(maps, subjects, last_token, lh);
    };
    const double m = net->process().model_scale(s);
    const double alpha = o.scale * std::sqrt(1.0 - 0.5 * (total > 1 ? double(step) / double(total - 1) : 0.0));
    auto view = [&](const torch::Tensor& v) {
      std::vector<int64_t> shape(size_t(x.dim()), 1);
      shape[0] = x.size(0);
      return v.view(shape);
    };
    torch::Tensor y = x;
    // Refinement at the steps 0, 0.2 and 0.4 of the run: until each sample's loss is below 1 - threshold.
    const std::pair<double, double> marks[] = {{0.0, 0.05}, {0.2, 0.5}, {0.4, 0.8}};
    for (const auto& [at, threshold] : marks) {
      if (step != int(std::lround(at * total))) continue;
      for (int it = 0; it < o.refine; ++it) {
        LossAndGradient lg = attention_loss_gradient(*net, y, s, c, loss);
        auto active = (lg.loss > 1 - threshold).to(y.scalar_type());
        if (active.sum().item<double>() == 0) break;
        y = y - lg.grad * view(active) * (alpha / (m * m));
      }
    }
    LossAndGradient lg = attention_loss_gradient(*net, y, s, c, loss);
    return y - lg.grad * (alpha / (m * m));
  };
  return u;
}

namespace {

// The state update is built by the pipeline (it knows the prompt's words);
// the rule leaves the denoiser alone.
DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions&, const std::shared_ptr<NetDenoiser>&) { return inner; }

std::string describe(const GuidanceOptions& g) {
  std::ostringstream o;
  o << ", Attend-and-Excite '" << g.text("attend-excite") << "' scale " << g.number("attend-excite-scale");
  return o.str();
}

GuidanceRuleRegistrar reg(
    GuidanceRuleInfo{"attend-excite", "Attend-and-Excite: move the state until every subject word gets attention",
                     "Chefer et al. 2023", 0, build, describe}
        .option(MethodOption::text("attend-excite", "",
                                   "Attend-and-Excite: the prompt's subject words, comma-separated (e.g. "
                                   "\"sneaker,bag\")"))
        .option(MethodOption{"attend-excite-scale", 20, "Attend-and-Excite step size scale"}.at_least(0, true))
        .option(MethodOption{"attend-excite-until", 0.5, "Attend-and-Excite: the fraction of the steps it acts on"}
                    .in(0, 1, true, false))
        .option(MethodOption{"attend-excite-refine", 20,
                             "Attend-and-Excite: most refinement iterations at the steps 0, 0.2 and 0.4 of the run"}
                    .at_least(0)
                    .whole())
        .on_when_given()
        .needs_network("it reads the network's cross-attention")
        .on_prompts());

}  // namespace
}  // namespace tweedie
