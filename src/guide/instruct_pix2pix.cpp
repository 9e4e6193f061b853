// InstructPix2Pix's dual classifier-free guidance (guide/instruct_pix2pix.h).
#include "tweedie/guide/instruct_pix2pix.h"

#include <cmath>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/guide/guidance.h"
#include "tweedie/nn/hooks.h"

namespace tweedie {

InstructPix2PixGuidance::InstructPix2PixGuidance(DenoiserPtr inner, double text_scale, double image_scale,
                                                 std::function<Cond(const Cond&)> text_negative,
                                                 std::function<Cond(const Cond&)> image_negative)
    : GuidanceRule(std::move(inner)), text_scale_(text_scale), image_scale_(image_scale),
      text_negative_(std::move(text_negative)), image_negative_(std::move(image_negative)) {
  check(std::isfinite(text_scale_) && std::isfinite(image_scale_), "InstructPix2Pix guidance scales must be finite");
  check(text_negative_ && image_negative_, "InstructPix2Pix guidance needs the text and image negatives");
}

Prediction InstructPix2PixGuidance::guide(const torch::Tensor& x, double s, const Cond& c) {
  Prediction all = [&] {
    BranchScope branches({"cond", "image", "uncond"});
    return inner(torch::cat({x, x, x}), s, c.concat(text_negative_(c)).concat(image_negative_(c)));
  }();
  auto x0 = all.x0().chunk(3), eps = all.eps().chunk(3);
  auto guided = x0[2] + (x0[1] - x0[2]) * image_scale_ + (x0[0] - x0[1]) * text_scale_;
  Prediction out = Prediction::from_x0(guided, x, s, process());
  out.set_renoise_eps(eps[2]);
  return out;
}

namespace {

using CondFn = std::function<Cond(const Cond&)>;

DenoiserPtr build(DenoiserPtr inner, const GuidanceOptions& g, const std::shared_ptr<NetDenoiser>&) {
  check(g.has("image-negative") && g.has("negative"),
        "--image-cfg needs an InstructPix2Pix model (a UNet taking the image's latent beside its input)");
  return std::make_shared<InstructPix2PixGuidance>(std::move(inner), g.number("cfg"), g.number("image-cfg"),
                                                   g.object<CondFn>("negative"), g.object<CondFn>("image-negative"));
}

std::string describe(const GuidanceOptions& g) {
  std::ostringstream o;
  o << ", image CFG " << g.number("image-cfg");
  return o.str();
}

GuidanceRuleRegistrar reg(
    GuidanceRuleInfo{"instruct-pix2pix", "InstructPix2Pix's dual guidance: toward the instruction and toward the image",
                     "Brooks et al. 2023, InstructPix2Pix", 40, build, describe}
        .option(MethodOption{"image-cfg", 1,
                             "InstructPix2Pix models: image guidance scale s_I (1.5 when not given; 1 = CFG with the "
                             "image-conditioned negative)"})
        .off_at(1)
        .attachment("image-negative")
        .needs_condition()
        .on_prompts()
        .does_the_work_of("cfg"));

}  // namespace
}  // namespace tweedie
