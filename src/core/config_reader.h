// Private helper for JSON configs (network configs in src/models, the training
// config in src/train): typed access to a JSON object that records which keys
// were read, so unknown keys, wrong types and impossible values all become
// one-line Errors naming the key. Two wordings, one per caller family:
//   ValueThenWhy: "unet config: 'channel_mult' = []: must be a non-empty list of positive integers"
//   WhyThenValue: "run.json: 'lr' must be positive (got -1)"
#pragma once
#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tweedie/core/error.h"

namespace tweedie::detail {

class ConfigReader {
 public:
  using json = nlohmann::json;
  enum class Style { ValueThenWhy, WhyThenValue };

  // A network config: errors start "<arch> config: "; empty text is {}.
  ConfigReader(const std::string& arch, const std::string& text) : ConfigReader(arch + " config", text, Style::ValueThenWhy) {}

  // Errors start "<prefix>: " (a file name, say); empty text is {}.
  ConfigReader(std::string prefix, const std::string& text, Style style) : prefix_(std::move(prefix)), style_(style) {
    try {
      j_ = text.empty() ? json::object() : json::parse(text);
    } catch (const std::exception& e) {
      fail(prefix_, ": malformed JSON (", e.what(), ")");
    }
    if (!j_.is_object()) fail(prefix_, ": expected a JSON object, got ", j_.dump());
  }

  // The parsed object, as given (for storing a normalized copy of the config).
  const json& object() const { return j_; }

  bool has(const std::string& key) {
    known_.insert(key);
    return j_.contains(key);
  }

  [[noreturn]] void bad(const std::string& key, const std::string& why) const {
    const std::string value = j_.contains(key) ? j_.at(key).dump() : std::string("(absent)");
    if (style_ == Style::ValueThenWhy) fail(prefix_, ": '", key, "' = ", value, ": ", why);
    fail(prefix_, ": '", key, "' ", why, " (got ", value, ")");
  }

  int64_t integer(const std::string& key, int64_t def, int64_t min) {
    if (!has(key)) return def;
    const json& v = j_.at(key);
    if (!v.is_number_integer()) bad(key, "must be an integer");
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX))
      bad(key, "must be <= " + std::to_string(INT64_MAX));
    const int64_t x = v.get<int64_t>();
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

  double positive(const std::string& key, double def) {
    const double x = number(key, def);
    if (has(key) && !(x > 0)) bad(key, "must be positive");
    return x;
  }

  double probability(const std::string& key, double def) {
    const double x = number(key, def);
    if (has(key) && (x < 0 || x > 1)) bad(key, "must be in [0, 1]");
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

  // A string turned into T by `from` (e.g. pred_kind_from_string); its Error
  // becomes "<prefix>: 'key': <its message>".
  template <class T, class From>
  T parsed(const std::string& key, T def, From from) {
    if (!has(key)) return def;
    const std::string s = string(key, "");
    try {
      return from(s);
    } catch (const Error& e) {
      fail(prefix_, ": '", key, "': ", e.what());
    }
  }

  // An object-valued key, returned as its JSON text ("" when absent).
  std::string object_json(const std::string& key) {
    if (!has(key)) return "";
    const json& v = j_.at(key);
    if (!v.is_object()) bad(key, "must be an object");
    return v.dump();
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

  // An image size given either as "image_size" (square) or as "height" and
  // "width" (each defaulting to the value passed in), not both.
  void image_size(int64_t& height, int64_t& width) {
    if (has("image_size")) {
      if (has("height") || has("width")) bad("image_size", "give either image_size or height/width, not both");
      height = width = integer("image_size", height, 1);
    } else {
      height = integer("height", height, 1);
      width = integer("width", width, 1);
    }
  }

  // Call after reading every key: an unknown key is an Error listing the known ones.
  void finish() const {
    for (auto& [k, v] : j_.items())
      if (!known_.count(k)) {
        std::string list;
        for (auto& n : known_) list += (list.empty() ? "" : ", ") + n;
        fail(prefix_, ": unknown key '", k, "' (known: ", list, ")");
      }
  }

 private:
  std::string prefix_;
  Style style_;
  json j_;
  std::set<std::string> known_;
};

// "[1,2,3]"
inline std::string list_str(const std::vector<int64_t>& v) { return nlohmann::json(v).dump(); }

}  // namespace tweedie::detail
