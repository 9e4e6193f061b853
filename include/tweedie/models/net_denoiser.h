// NetDenoiser: a Network + Process + Parameterization as a Denoiser, and the
// one-file model format.
//
// Model files are safetensors whose __metadata__ holds everything needed to
// sample: "tweedie.arch" and "tweedie.config" (the network), "tweedie.process"
// (a make_process spec), "tweedie.prediction" (eps, x0, v, velocity, edm),
// "tweedie.sigma_data", "tweedie.class_names" (JSON array, optional) and
// "tweedie.training" (JSON: command, steps, time, ...).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "tweedie/models/denoiser.h"
#include "tweedie/models/network.h"

namespace tweedie {

class NetDenoiser : public Denoiser {
 public:
  NetDenoiser(NetworkPtr net, ProcessPtr proc, Parameterization param);
  const Process& process() const override { return *proc_; }
  // x in sampling space; the network sees x_t * c_in and model time t_of(s).
  Prediction predict(const torch::Tensor& x, double s, const Cond& c) override;

  Network& network() { return *net_; }
  const NetworkPtr& network_ptr() const { return net_; }
  const Parameterization& parameterization() const { return param_; }
  ProcessPtr process_ptr() const { return proc_; }
  // Compute dtype for inference: float32 (default) or bfloat16 (autocast-style:
  // weights and inputs cast, output back to the input dtype).
  void set_dtype(torch::ScalarType t) { dtype_ = t; }

 private:
  NetworkPtr net_;
  ProcessPtr proc_;
  Parameterization param_;
  torch::ScalarType dtype_ = torch::kFloat32;
};

struct ModelFile {
  std::shared_ptr<NetDenoiser> denoiser;
  std::vector<std::string> class_names;  // empty if unconditional or unnamed
  std::map<std::string, std::string> metadata;
};

ModelFile load_model_file(const std::string& path);
void save_model_file(const std::string& path, NetDenoiser& d, const std::vector<std::string>& class_names,
                     const std::map<std::string, std::string>& extra_metadata = {});

}  // namespace tweedie
