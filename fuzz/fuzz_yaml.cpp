// libFuzzer target: parse_yaml (the LDM/SGM yaml subset -> JSON).
#include "fuzz_common.h"
#include "tweedie/core/error.h"
#include "tweedie/io/yaml.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    nlohmann::json j = tweedie::parse_yaml(text, "fuzz.yaml");
    (void)j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } catch (const tweedie::Error& e) {
    fuzz::check_message(e.what());
  }
  return 0;
}
