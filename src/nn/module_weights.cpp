// See include/tweedie/nn/module_weights.h.
#include "tweedie/nn/module_weights.h"

#include <sstream>

#include "tweedie/core/error.h"

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

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> module_tensors(torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& p : m.named_parameters(/*recurse=*/true)) out.emplace_back(p.key(), p.value());
  for (auto& b : m.named_buffers(/*recurse=*/true)) out.emplace_back(b.key(), b.value());
  return out;
}

void load_module_weights(torch::nn::Module& m, const StateDict& sd, const std::string& what, const std::string& prefix,
                         const std::set<std::string>& ignored) {
  auto expected = module_tensors(m);
  std::vector<std::string> missing, unexpected, misshaped, wrong_dtype;
  std::set<std::string> names;
  for (auto& [name, t] : expected) {
    names.insert(prefix + name);
    auto it = sd.find(prefix + name);
    if (it == sd.end())
      missing.push_back(prefix + name);
    else if (it->second.sizes() != t.sizes())
      misshaped.push_back(prefix + name + " " + shape_str(it->second.sizes()) + " (expected " + shape_str(t.sizes()) + ")");
    else if (t.is_floating_point() != it->second.is_floating_point() || torch::isComplexType(it->second.scalar_type()))
      wrong_dtype.push_back(prefix + name + " " + std::string(c10::toString(it->second.scalar_type())) + " (expected " +
                            std::string(c10::toString(t.scalar_type())) + ")");
  }
  for (auto it = sd.lower_bound(prefix); it != sd.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it)
    if (!names.count(it->first) && !ignored.count(it->first)) unexpected.push_back(it->first);
  if (!missing.empty() || !unexpected.empty() || !misshaped.empty() || !wrong_dtype.empty()) {
    std::string msg = what + ": tensors do not match:";
    if (!missing.empty()) msg += " missing " + first_few(missing) + ";";
    if (!unexpected.empty()) msg += " unexpected " + first_few(unexpected) + ";";
    if (!misshaped.empty()) msg += " wrong shape " + first_few(misshaped) + ";";
    if (!wrong_dtype.empty()) msg += " wrong dtype " + first_few(wrong_dtype) + ";";
    msg.pop_back();
    fail(msg);
  }
  torch::NoGradGuard g;
  for (auto& [name, t] : expected) t.copy_(sd.at(prefix + name));
}

void cast_for_inference(torch::nn::Module& m, torch::ScalarType dtype) {
  m.to(dtype);
  if (dtype != torch::kBFloat16 && dtype != torch::kHalf) return;
  torch::NoGradGuard g;
  for (auto& p : m.parameters())
    if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
}

}  // namespace tweedie
