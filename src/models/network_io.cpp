// Networks in safetensors files (see include/tweedie/models/network_io.h):
// weights under their module paths, architecture in "tweedie.arch" and
// "tweedie.config". Loading requires every expected tensor with its shape and
// nothing else. Verified in tests/test_networks.cpp (bit-identical round
// trip; other-architecture, missing and mis-shaped tensors give clear Errors).
#include "tweedie/models/network_io.h"

#include <set>
#include <sstream>

#include "tweedie/core/error.h"
#include "tweedie/io/safetensors.h"

namespace tweedie {

namespace {

std::string shape_str(torch::IntArrayRef s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

std::string first_few(const std::vector<std::string>& v, size_t n = 4) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < n; ++i) s += (i ? ", " : "") + v[i];
  if (v.size() > n) s += ", ... (" + std::to_string(v.size()) + " in all)";
  return s;
}

// Check names and shapes of the file's tensors against the network's, then copy.
void copy_weights(const std::string& path, const SafeTensors& st, Network& net) {
  auto expected = network_tensors(net);
  std::vector<std::string> missing, unexpected, misshaped;
  std::set<std::string> names;
  for (auto& [name, t] : expected) {
    names.insert(name);
    const torch::Tensor* f = st.find(name);
    if (!f)
      missing.push_back(name);
    else if (f->sizes() != t.sizes())
      misshaped.push_back(name + " " + shape_str(f->sizes()) + " (expected " + shape_str(t.sizes()) + ")");
  }
  for (auto& [name, t] : st.tensors)
    if (!names.count(name)) unexpected.push_back(name);
  if (!missing.empty() || !unexpected.empty() || !misshaped.empty()) {
    std::string msg = path + ": tensors do not match a '" + net.arch() + "' network of this config:";
    if (!missing.empty()) msg += " missing " + first_few(missing) + ";";
    if (!unexpected.empty()) msg += " unexpected " + first_few(unexpected) + ";";
    if (!misshaped.empty()) msg += " wrong shape " + first_few(misshaped) + ";";
    msg.pop_back();
    fail(msg);
  }
  torch::NoGradGuard g;
  for (auto& [name, t] : expected) {
    const torch::Tensor& f = st.at(name);
    check(!torch::isComplexType(f.scalar_type()) && f.scalar_type() != torch::kBool, path, ": tensor '", name,
          "' has dtype ", f.scalar_type(), ", expected a floating type");
    t.copy_(f);
  }
}

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> network_tensors(Network& net) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& p : net.named_parameters(/*recurse=*/true)) out.emplace_back(p.key(), p.value());
  for (auto& b : net.named_buffers(/*recurse=*/true)) out.emplace_back(b.key(), b.value());
  return out;
}

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
