// Private helper for network configs (unet.cpp, dit.cpp): typed access to a
// JSON object that records which keys were read, so unknown keys, wrong
// types and impossible values all become one-line Errors naming the key:
//   "unet config: 'channel_mult' = []: must be a non-empty list of positive integers"
#pragma once
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tweedie/core/error.h"

namespace tweedie::detail {

class ConfigReader {
 public:
  using json = nlohmann::json;
  ConfigReader(std::string arch, const std::string& text) : arch_(std::move(arch)) {
    try {
      j_ = text.empty() ? json::object() : json::parse(text);
    } catch (const std::exception& e) {
      fail(arch_, " config: malformed JSON (", e.what(), ")");
    }
    if (!j_.is_object()) fail(arch_, " config: expected a JSON object, got ", j_.dump());
  }

  bool has(const std::string& key) {
    known_.insert(key);
    return j_.contains(key);
  }

  [[noreturn]] void bad(const std::string& key, const std::string& why) const {
    fail(arch_, " config: '", key, "' = ", j_.contains(key) ? j_.at(key).dump() : std::string("(absent)"), ": ", why);
  }

  int64_t integer(const std::string& key, int64_t def, int64_t min) {
    if (!has(key)) return def;
    const json& v = j_.at(key);
    if (!v.is_number_integer()) bad(key, "must be an integer");
    const int64_t x = v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX) ? INT64_MAX : v.get<int64_t>();
    if (x < min) bad(key, "must be >= " + std::to_string(min));
    return x;
  }

  double number(const std::string& key, double def) {
    if (!has(key)) return def;
    const json& v = j_.at(key);
    if (!v.is_number()) bad(key, "must be a number");
    const double x = v.get<double>();
    if (!std::isfinite(x)) bad(key, "must be finite");
    return x;
  }

  bool boolean(const std::string& key, bool def) {
    if (!has(key)) return def;
    const json& v = j_.at(key);
    if (!v.is_boolean()) bad(key, "must be true or false");
    return v.get<bool>();
  }

  std::string string(const std::string& key, const std::string& def) {
    if (!has(key)) return def;
    const json& v = j_.at(key);
    if (!v.is_string()) bad(key, "must be a string");
    return v.get<std::string>();
  }

  std::vector<int64_t> int_list(const std::string& key, std::vector<int64_t> def, int64_t min) {
    if (!has(key)) return def;
    const json& v = j_.at(key);
    const std::string what = "must be a list of integers >= " + std::to_string(min);
    if (!v.is_array()) bad(key, what);
    std::vector<int64_t> out;
    for (auto& e : v) {
      if (!e.is_number_integer() || e.get<int64_t>() < min) bad(key, what);
      out.push_back(e.get<int64_t>());
    }
    return out;
  }

  // Call after reading every key: an unknown key is an Error listing the known ones.
  void finish() const {
    for (auto& [k, v] : j_.items())
      if (!known_.count(k)) {
        std::string list;
        for (auto& n : known_) list += (list.empty() ? "" : ", ") + n;
        fail(arch_, " config: unknown key '", k, "' (known: ", list, ")");
      }
  }

 private:
  std::string arch_;
  json j_;
  std::set<std::string> known_;
};

// "[1,2,3]"
inline std::string list_str(const std::vector<int64_t>& v) { return nlohmann::json(v).dump(); }

}  // namespace tweedie::detail
