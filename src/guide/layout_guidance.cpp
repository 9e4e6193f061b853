// Layout guidance (layout_guidance.h). Verified in
// tests/test_attention_guidance.cpp: the energy on hand-made maps (a map
// inside its box costs 0, a uniform one (1 - box area)^2), the update moves
// a word's attention into its box on the test UNet, and bad boxes.
#include "tweedie/guide/layout_guidance.h"

#include <cmath>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/guide/guidance.h"

namespace tweedie {

std::vector<WordBox> parse_layout(const std::string& text) {
  const std::string form = " (give WORD:X0,Y0,X1,Y1 boxes as fractions of the image, separated by |)";
  std::vector<WordBox> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, '|');) {
    const size_t colon = item.rfind(':');
    check(colon != std::string::npos && colon > 0, "--layout: '", item, "' has no word", form);
    WordBox b;
    b.word = item.substr(0, colon);
    while (!b.word.empty() && b.word.front() == ' ') b.word.erase(0, 1);
    while (!b.word.empty() && b.word.back() == ' ') b.word.pop_back();
    std::vector<double> v;
    std::stringstream nums(item.substr(colon + 1));
    for (std::string t; std::getline(nums, t, ',');) {
      char* end = nullptr;
      const double x = std::strtod(t.c_str(), &end);
      check(!t.empty() && end && *end == '\0' && std::isfinite(x), "--layout: '", t, "' in '", item,
            "' is not a number", form);
      v.push_back(x);
    }
    check(v.size() == 4, "--layout: '", item, "' needs four numbers", form);
    b.x0 = v[0], b.y0 = v[1], b.x1 = v[2], b.y1 = v[3];
    check(b.x0 >= 0 && b.y0 >= 0 && b.x1 <= 1 && b.y1 <= 1 && b.x0 < b.x1 && b.y0 < b.y1, "--layout: the box of '",
          b.word, "' must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1", form);
    out.push_back(b);
  }
  check(!out.empty() && !text.empty() && text.back() != '|', "--layout: an empty box in '", text, "'", form);
  return out;
}

namespace {
// 1 where the centre of a map pixel of an h x w grid lies inside the box.
torch::Tensor box_mask(const WordBox& b, int64_t h, int64_t w) {
  auto ys = (torch::arange(h, torch::kFloat64) + 0.5) / double(h);
  auto xs = (torch::arange(w, torch::kFloat64) + 0.5) / double(w);
  auto my = ((ys >= b.y0) & (ys < b.y1)).to(torch::kFloat64), mx = ((xs >= b.x0) & (xs < b.x1)).to(torch::kFloat64);
  return (my.view({h, 1}) * mx.view({1, w})).view({h * w});
}
}  // namespace

torch::Tensor layout_loss(const std::vector<CrossAttentionLayer>& maps, const std::vector<std::vector<int64_t>>& words,
                          const std::vector<WordBox>& boxes) {
  check(words.size() == boxes.size() && !words.empty(), "layout guidance: ", words.size(), " words for ", boxes.size(),
        " boxes");
  torch::Tensor e;
  int used = 0;
  for (const auto& m : maps) {
    if (m.site.rfind("middle_block", 0) != 0 && m.site.rfind("output_blocks", 0) != 0) continue;
    ++used;
    for (size_t i = 0; i < words.size(); ++i) {
      torch::Tensor map;
      for (int64_t t : words[i]) {
        check(t >= 0 && t < m.probs.size(2), "layout guidance: token ", t, " beyond the context");
        auto col = m.probs.select(2, t);
        map = map.defined() ? map + col : col;
      }
      const auto inside = (map * box_mask(boxes[i], m.h, m.w).to(map.dtype())).sum(1);
      const auto r = inside / map.sum(1).clamp_min(1e-30);
      const auto term = (1 - r).pow(2);
      e = e.defined() ? e + term : term;
    }
  }
  check(used > 0, "layout guidance: no cross-attention in the middle block or the decoder");
  return e / double(words.size());
}

StateUpdate layout_guidance(std::shared_ptr<NetDenoiser> net, std::vector<std::vector<int64_t>> words,
                            std::vector<WordBox> boxes, LayoutOptions o, int steps) {
  check(net != nullptr, "layout guidance needs a network model (it reads the cross-attention)");
  check(o.scale > 0 && std::isfinite(o.scale), "--layout-scale must be positive (got ", o.scale, ")");
  check(o.until > 0 && o.until <= 1, "--layout-until must be in (0, 1] (got ", o.until, ")");
  check(o.iterations >= 1, "--layout-iterations must be >= 1");
  StateUpdate u;
  u.steps = std::max(1, int(std::lround(o.until * steps)));
  u.fn = [net, words, boxes, o](int, int, double s, const torch::Tensor& x, const Cond& c) {
    const AttentionLoss loss = [&](const std::vector<CrossAttentionLayer>& maps) {
      return layout_loss(maps, words, boxes);
    };
    std::vector<int64_t> shape(size_t(x.dim()), 1);
    shape[0] = x.size(0);
    torch::Tensor y = x;
    for (int it = 0; it < o.iterations; ++it) {
      LossAndGradient lg = attention_loss_gradient(*net, y, s, c, loss);
      auto active = (lg.loss > o.threshold).to(y.scalar_type());
      if (active.sum().item<double>() == 0) break;
      y = y - lg.grad * active.view(shape) * (o.scale * s * s);
    }
    return y;
  };
  return u;
}

namespace {

// The state update is built by the pipeline (it knows the prompt's words).
DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions&, const std::shared_ptr<NetDenoiser>&) { return inner; }

std::string describe(const GuidanceOptions& g) {
  std::ostringstream o;
  o << ", layout '" << g.text("layout") << "' scale " << g.number("layout-scale");
  return o.str();
}

GuidanceRuleRegistrar reg(
    GuidanceRuleInfo{"layout", "layout guidance: move the state until each word's attention is inside its box",
                     "Chen et al. 2024", 0, build, describe}
        .option(MethodOption::text("layout", "",
                                   "layout guidance: WORD:X0,Y0,X1,Y1 boxes (fractions of the image, top left 0,0), "
                                   "separated by | (e.g. \"sneaker:0,0,0.5,0.5|bag:0.5,0.5,1,1\")"))
        .option(MethodOption{"layout-scale", 30, "layout guidance step size eta (times sigma^2)"}.at_least(0, true))
        .option(MethodOption{"layout-until", 0.2, "layout guidance: the fraction of the steps it acts on"}
                    .in(0, 1, true, false))
        .option(MethodOption{"layout-iterations", 5, "layout guidance: most updates per step"}.at_least(1).whole())
        .option(MethodOption{"layout-threshold", 0.2, "layout guidance: no update once the energy is below"}
                    .at_least(0))
        .on_when_given()
        .needs_network("it reads the network's cross-attention")
        .on_prompts());

}  // namespace
}  // namespace tweedie
