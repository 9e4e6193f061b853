#include "model_spec.h"

#include "tweedie/core/error.h"
#include "tweedie/models/gmm.h"

namespace tweedie::cli {

namespace {
// The analytic mixture reports its exact answer in a chosen parameterization,
// so the sampler sees it through the same conversion path as a network's.
class ReparamDenoiser : public Denoiser {
 public:
  ReparamDenoiser(DenoiserPtr d, Parameterization p) : d_(std::move(d)), p_(p) {}
  const Process& process() const override { return d_->process(); }
  Prediction predict(const torch::Tensor& x, double s, const Cond& c) override {
    return Prediction(p_, d_->predict(x, s, c).as(p_), x, s, d_->process());
  }

 private:
  DenoiserPtr d_;
  Parameterization p_;
};
}  // namespace

LoadedModel load_model(const std::string& spec, const std::string& process_spec, const std::string& prediction) {
  if (spec.rfind("gmm:", 0) == 0) {
    auto gmm = GaussianMixture::load(spec.substr(4));
    auto proc = make_process(process_spec.empty() ? "vp" : process_spec);
    LoadedModel m;
    m.sample_shape = gmm.shape;
    m.num_classes = gmm.num_classes();
    m.description = "gaussian mixture " + spec.substr(4) + " (" + std::to_string(gmm.components()) +
                    " components, dim " + std::to_string(gmm.dim()) + ") on process " + proc->name();
    DenoiserPtr d = std::make_shared<GMMDenoiser>(std::move(gmm), proc);
    if (!prediction.empty() && prediction != "x0") {
      Parameterization p{pred_kind_from_string(prediction)};
      if (p.kind == PredKind::EDM) check(proc->space() == Space::Plain, "--prediction edm needs a VP/VE/EDM process");
      d = std::make_shared<ReparamDenoiser>(d, p);
    }
    m.denoiser = d;
    return m;
  }
  fail("unknown model '", spec, "' (expected gmm:FILE.json)");
}

}  // namespace tweedie::cli
