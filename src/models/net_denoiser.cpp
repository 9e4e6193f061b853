// NetDenoiser and the one-file model format (see net_denoiser.h).
#include "tweedie/models/net_denoiser.h"

#include <nlohmann/json.hpp>

#include "tweedie/core/error.h"
#include "tweedie/models/network_io.h"

namespace tweedie {

NetDenoiser::NetDenoiser(NetworkPtr net, ProcessPtr proc, Parameterization param)
    : net_(std::move(net)), proc_(std::move(proc)), param_(param) {
  check(param_.kind != PredKind::Score, "networks predicting the score directly are not supported");
  if (param_.kind == PredKind::EDM)
    check(proc_->space() == Space::Plain, "EDM preconditioning needs a VP/VE/EDM process, not ", proc_->name());
}

Prediction NetDenoiser::predict(const torch::Tensor& x, double s, const Cond& c) {
  const int64_t n = x.size(0);
  auto xin = x * (proc_->model_scale(s) * param_.c_in(s));
  auto t = torch::full({n}, proc_->t_of(s), x.options().dtype(torch::kFloat32));
  net_->hooks().ctx = current_hook_context(s, n);
  torch::Tensor out;
  if (dtype_ == torch::kFloat32) {
    out = net_->forward(xin, t, c);
  } else {
    out = net_->forward(xin.to(dtype_), t, c).to(x.scalar_type());
  }
  return Prediction(param_, out, x, s, *proc_);
}

ModelFile load_model_file(const std::string& path) {
  std::map<std::string, std::string> md;
  NetworkPtr net = load_network(path, &md);
  check(net->arch() != "classifier", path, ": holds a 'classifier' network, not a diffusion model");
  auto get = [&](const std::string& k) {
    auto it = md.find(k);
    if (it == md.end()) fail(path, ": not a tweedie model file (metadata lacks '", k, "')");
    return it->second;
  };
  ProcessPtr proc;
  try {
    proc = make_process(get("tweedie.process"));
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  Parameterization param;
  try {
    param.kind = pred_kind_from_string(get("tweedie.prediction"));
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  if (md.count("tweedie.sigma_data")) {
    try {
      param.sigma_data = std::stod(md["tweedie.sigma_data"]);
    } catch (...) {
      fail(path, ": metadata 'tweedie.sigma_data' is not a number");
    }
  }
  ModelFile f;
  f.metadata = md;
  if (md.count("tweedie.class_names")) {
    try {
      auto j = nlohmann::json::parse(md["tweedie.class_names"]);
      for (auto& e : j) f.class_names.push_back(e.get<std::string>());
    } catch (const std::exception&) {
      fail(path, ": metadata 'tweedie.class_names' is not a JSON array of strings");
    }
    check(f.class_names.empty() || int64_t(f.class_names.size()) == net->num_classes(), path, ": ",
          f.class_names.size(), " class names for a network with ", net->num_classes(), " classes");
  }
  net->eval();
  f.denoiser = std::make_shared<NetDenoiser>(net, proc, param);
  return f;
}

void save_model_file(const std::string& path, NetDenoiser& d, const std::vector<std::string>& class_names,
                     const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> md = extra;
  md["tweedie.process"] = d.process().name();
  md["tweedie.prediction"] = to_string(d.parameterization().kind);
  md["tweedie.sigma_data"] = std::to_string(d.parameterization().sigma_data);
  if (!class_names.empty()) md["tweedie.class_names"] = nlohmann::json(class_names).dump();
  save_network(path, d.network(), md);
}

}  // namespace tweedie
