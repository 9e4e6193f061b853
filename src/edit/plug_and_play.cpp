// Plug-and-Play (Tumanyan et al. 2023): the source's decoder features and
// self-attention queries/keys injected into the target's sampling
// (edit/plug_and_play.h). Verified in tests/test_attention_edits.cpp: with
// nothing injected the rows are the two prompts' own samples; the chosen
// blocks on the test UNet are the decoder's second-stage second residual
// block and the self-attention layers from it on; inside the windows the
// target's values there are the source's, its own after.
#include "tweedie/edit/plug_and_play.h"

#include <cmath>
#include <memory>

#include "tweedie/core/error.h"
#include "tweedie/edit/edit_method.h"

namespace tweedie {

namespace {

// "output_blocks.K.0.out" -> K, else -1.
int64_t decoder_res_block(const std::string& site) {
  const std::string head = "output_blocks.", tail = ".0.out";
  if (site.compare(0, head.size(), head) != 0 || site.size() <= head.size() + tail.size() ||
      site.compare(site.size() - tail.size(), tail.size(), tail) != 0)
    return -1;
  const std::string k = site.substr(head.size(), site.size() - head.size() - tail.size());
  if (k.empty() || k.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(k);
}

// "output_blocks.K.<...>" -> K, else -1.
int64_t decoder_block(const std::string& site) {
  const std::string head = "output_blocks.";
  if (site.compare(0, head.size(), head) != 0) return -1;
  const size_t dot = site.find('.', head.size());
  const std::string k = site.substr(head.size(), dot == std::string::npos ? std::string::npos : dot - head.size());
  if (k.empty() || k.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(k);
}

}  // namespace

PlugAndPlayResult plug_and_play(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x,
                                bool from_noise, const Cond& source, const Cond& target, const PlugAndPlayOptions& o,
                                torch::Generator gen) {
  check(o.features >= 0 && o.features <= 1, "pnp: --pnp-features must be in [0, 1] (got ", o.features, ")");
  check(o.attention >= 0 && o.attention <= 1, "pnp: --pnp-attention must be in [0, 1] (got ", o.attention, ")");
  PairedOptions po = o.pair;
  po.who = "pnp";
  PairedSampling pair(model, sigmas, x, from_noise, source, target, po);
  PlugAndPlayResult out;
  if (pair.steps() < 1) {
    out.source = out.edited = pair.start();
    return out;
  }
  NetDenoiser& net = pair.network_model();
  // The decoder's residual blocks in call order, grouped into stages by resolution.
  std::vector<std::pair<int64_t, int64_t>> blocks;  // (block index, height)
  for (const SiteShape& s : visited_sites(net, "output_blocks.*", pair.start(), pair.levels().front(), source))
    if (decoder_res_block(s.site) >= 0 && s.shape.size() == 4) blocks.push_back({decoder_res_block(s.site), s.shape[2]});
  check(!blocks.empty(), "pnp needs a Stable Diffusion UNet (its decoder's output_blocks)");
  std::vector<std::pair<int64_t, int64_t>> stage1;  // the blocks at the second resolution
  int64_t first_h = blocks.front().second, second_h = -1;
  for (const auto& [k, h] : blocks) {
    if (h != first_h && second_h < 0) second_h = h;
    if (h == second_h) stage1.push_back({k, h});
  }
  const int64_t feature_block = stage1.empty() ? blocks.back().first : stage1[std::min<size_t>(1, stage1.size() - 1)].first;
  out.feature_site = "output_blocks." + std::to_string(feature_block) + ".0.out";
  for (const AttentionLayer& l : self_attention_layers(net, pair.start(), pair.levels().front(), source))
    if (decoder_block(l.site) >= feature_block) out.attention_layers.push_back(l.site);

  const int steps = pair.steps();
  const int feature_steps = int(std::floor(o.features * steps + 1e-9));
  const int attention_steps = int(std::floor(o.attention * steps + 1e-9));
  std::vector<std::unique_ptr<ScopedHook>> hooks;
  Hooks& hk = net.network().hooks();
  hooks.push_back(share_source_rows(hk, out.feature_site, [=](int step) { return step >= 0 && step < feature_steps; },
                                    false, o.on_inject));
  auto in_attention = [=](int step) { return step >= 0 && step < attention_steps; };
  for (const std::string& l : out.attention_layers) {
    hooks.push_back(share_source_rows(hk, l + ".q", in_attention, false, o.on_inject));
    hooks.push_back(share_source_rows(hk, l + ".k", in_attention, false, o.on_inject));
  }
  std::tie(out.source, out.edited) = pair.run({}, gen);
  return out;
}

namespace {

EditResult pnp_edit(const EditRequest& r) {
  PlugAndPlayOptions o;
  o.features = r.options.number("pnp-features");
  o.attention = r.options.number("pnp-attention");
  o.pair = paired_options(r);
  PlugAndPlayResult p = plug_and_play(r.model, r.sigmas, r.x, r.from_noise, r.source, r.target, o, r.gen);
  EditResult out;
  out.edited = p.edited;
  out.source = p.source;
  return out;
}

EditMethodRegistrar reg(
    EditMethodInfo{"pnp",
                   "Plug-and-Play: the source's decoder features and self-attention queries/keys injected into the "
                   "target's sampling (--source-prompt optional: the empty prompt, as the paper)",
                   "Tumanyan et al. 2023, Plug-and-Play Diffusion Features", pnp_edit}
        .for_text_models()
        .from_seed()
        .invertible_sampler()
        .option(MethodOption{"pnp-features", 0.8, "share of the steps with the source's residual features injected"}
                    .in(0, 1))
        .option(MethodOption{"pnp-attention", 0.5,
                             "share of the steps with the source's self-attention queries and keys injected"}
                    .in(0, 1))
        .option(paired_inversion_option()));

}  // namespace

}  // namespace tweedie
