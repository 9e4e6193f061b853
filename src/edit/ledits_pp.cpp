// LEDITS++ (ledits_pp.h).
#include "tweedie/edit/ledits_pp.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "tweedie/core/error.h"
#include "tweedie/edit/inversion.h"
#include "tweedie/guide/sega.h"
#include "tweedie/models/net_denoiser.h"

namespace tweedie {
namespace {

std::string lower(std::string t) {
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return t;
}

// The target words the source prompt lacks (all target words when none do).
std::vector<int64_t> changed_tokens(const std::vector<PromptWord>& source, const std::vector<PromptWord>& target) {
  std::multiset<std::string> have;
  for (const PromptWord& w : source) have.insert(lower(w.text));
  std::vector<int64_t> changed, all;
  for (const PromptWord& w : target) {
    all.insert(all.end(), w.positions.begin(), w.positions.end());
    auto it = have.find(lower(w.text));
    if (it != have.end())
      have.erase(it);
    else
      changed.insert(changed.end(), w.positions.begin(), w.positions.end());
  }
  return changed.empty() ? all : changed;
}

}  // namespace

EditResult ledits_pp(const EditRequest& r) {
  check(r.target.context.defined(), "ledits: needs a text model (its edit concept is the target prompt)");
  check(!r.target_words.empty(), "ledits: the target prompt has no words");
  auto net = std::dynamic_pointer_cast<NetDenoiser>(r.model);
  check(net != nullptr, "ledits: needs a network model (its masks read the cross-attention)");
  const std::vector<double> tail = schedule_tail(r.sigmas, r.strength);
  if (tail.size() < 2) return {r.x.clone(), {}, {}};
  InversionOptions io;
  io.cfg = r.cfg, io.eta = r.options.number("eta"), io.gen = r.gen;
  const Inversion inv = invert("ddpm", r.model, tail, r.x, r.source, io);
  // The decoding model: the inversion's (CFG at w under the source) plus the target as a SEGA concept.
  CFGOptions cfg;
  cfg.scale = r.cfg;
  SegaOptions so;
  so.away = {false};
  so.scales = {r.options.number("ledits-scale")};
  so.threshold = r.options.number("ledits-threshold");
  so.warmup = 0;
  so.momentum = 0;
  so.mask = parse_sega_mask(r.options.text("ledits-mask"), "ledits-mask");
  so.tokens = {changed_tokens(r.source_words, r.target_words)};
  auto model = std::make_shared<SegaDenoiser>(r.model, cfg, so, std::vector<Cond>{r.target}, net);
  InversionOptions decode_options = io;
  decode_options.cfg = 1;  // the SEGA model does the guidance
  return {decode(model, inv, r.source, decode_options).to(torch::kFloat32), {}, {}};
}

namespace {

EditMethodRegistrar reg(
    EditMethodInfo{"ledits", "LEDITS++: edit-friendly DDPM inversion, decoded with SEGA toward the target prompt where "
                             "its changed words attend",
                   "Brack et al. 2024, LEDITS++", ledits_pp}
        .strength(0.85)
        .own_sampler()
        .for_text_models()
        .option(MethodOption{"ledits-scale", 5, "LEDITS++ edit guidance scale of the target concept"})
        .option(MethodOption{"ledits-threshold", 0.9, "LEDITS++ mask quantile lambda"}.in(0, 1, false, true))
        .option(MethodOption::text("ledits-mask", "intersect",
                                   "LEDITS++ mask: intersect (attention and size), attention, or channel (SEGA's)"))
        .option(MethodOption{"eta", 1.0, "noise fraction of the decoding steps"}.in(0, 1, true, false)));

}  // namespace
}  // namespace tweedie
