// Networks in safetensors files (see include/tweedie/models/network_io.h):
// weights under their module paths, architecture in "tweedie.arch" and
// "tweedie.config". Loading requires every expected tensor with its shape and
// nothing else. Verified in tests/test_networks.cpp (bit-identical round
// trip; other-architecture, missing and mis-shaped tensors give clear Errors).
#include "tweedie/models/network_io.h"

#include "tweedie/core/error.h"
#include "tweedie/io/safetensors.h"
#include "tweedie/nn/module_weights.h"

namespace tweedie {

namespace {

// Check names and shapes of the file's tensors against the network's, then copy.
void copy_weights(const std::string& path, const SafeTensors& st, Network& net) {
  StateDict sd;
  for (auto& [name, t] : st.tensors) sd.emplace(name, t);
  load_module_weights(net, sd, path + " ('" + net.arch() + "' network of this config)");
}

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> network_tensors(Network& net) { return module_tensors(net); }

void save_network(const std::string& path, Network& net, const std::map<std::string, std::string>& extra_metadata) {
  auto meta = extra_metadata;
  meta["tweedie.arch"] = net.arch();
  meta["tweedie.config"] = net.config_json();
  save_safetensors(path, network_tensors(net), meta);
}

NetworkPtr load_network(const std::string& path, std::map<std::string, std::string>* metadata_out) {
  SafeTensors st = load_safetensors(path);
  auto a = st.metadata.find("tweedie.arch");
  auto c = st.metadata.find("tweedie.config");
  if (a == st.metadata.end() || c == st.metadata.end())
    fail(path, ": not a tweedie network (no 'tweedie.arch' / 'tweedie.config' in the safetensors metadata)");
  NetworkPtr net;
  try {
    net = make_network(a->second, c->second);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  copy_weights(path, st, *net);
  net->eval();
  if (metadata_out) *metadata_out = st.metadata;
  return net;
}

void load_network_weights(const std::string& path, Network& net) {
  SafeTensors st = load_safetensors(path);
  auto a = st.metadata.find("tweedie.arch");
  if (a != st.metadata.end() && a->second != net.arch())
    fail(path, ": holds a '", a->second, "' network, expected '", net.arch(), "'");
  copy_weights(path, st, net);
}

}  // namespace tweedie
