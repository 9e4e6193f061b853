// The edit method registry and the validation every edit shares
// (edit/edit_method.h). The methods register in their own files.
#include "tweedie/edit/edit_method.h"

#include <ATen/CPUGeneratorImpl.h>

#include "tweedie/core/error.h"
#include "tweedie/edit/inversion.h"
#include "tweedie/sample/sampler.h"

namespace tweedie {

template <>
Registry<EditMethodInfo>& registry<EditMethodInfo>() {
  static Registry<EditMethodInfo> r("edit method");
  return r;
}

DenoiserPtr EditRequest::guided() const { return edit_detail::guided(model, cfg); }

EditResult run_edit_method(const EditMethodInfo& m, EditRequest r) {
  const std::string who = "edit " + m.name;
  check(r.model != nullptr, who, ": no model");
  check(r.x.defined() && r.x.dim() >= 2 && r.x.size(0) >= 1, who, ": the input must be a batch [N, ...]");
  check(torch::isfinite(r.x).all().item<bool>(), who, ": the input contains NaN or infinity");
  check(r.sigmas.size() >= 2 && r.sigmas.back() == 0, who, ": the schedule must end at 0");
  check(std::isfinite(r.cfg), who, ": the CFG scale must be finite (got ", r.cfg, ")");
  if (r.strength < 0) r.strength = m.default_strength;
  check(r.strength <= 1, who, ": strength must be in [0, 1] (got ", r.strength, ")");
  check(!m.source || !r.source.empty(), who, " needs the source condition");
  check(!m.text_only || (r.target.context.defined() && (!m.source || r.source.context.defined())), who,
        " needs a text model and prompts");
  check(!r.from_noise || m.seeds, who, " edits images: give it an input (it cannot generate its source from a seed)");
  if (r.sampler.empty()) r.sampler = m.sampler;
  const SamplerInfo& s = find_sampler(r.sampler);
  if (m.sampler_must_invert && !r.from_noise) require_invertible(s);
  r.sampler = s.name;
  if (r.options.spec().empty() && !m.options.empty()) r.options = m.values(who);
  if (!r.gen.defined()) r.gen = at::make_generator<at::CPUGeneratorImpl>(0);
  EditResult out = m.fn(r);
  out.edited = out.edited.to(torch::kFloat32);
  return out;
}

}  // namespace tweedie
