// make_network: the architecture registry ("unet", "dit", "classifier", "sd_unet"). Configs are
// parsed and validated by each architecture (errors name the key and value).
// Verified in tests/test_networks.cpp (config round trip, bad configs).
#include "tweedie/models/network.h"

#include "tweedie/core/error.h"
#include "tweedie/models/classifier.h"
#include "tweedie/models/dit.h"
#include "tweedie/models/sd_unet.h"
#include "tweedie/models/sd_network.h"
#include "tweedie/models/unet.h"

namespace tweedie {

NetworkPtr make_network(const std::string& arch, const std::string& config_json) {
  if (arch == "unet") return make_unet(UNetConfig::from_json(config_json));
  if (arch == "dit") return make_dit(DiTConfig::from_json(config_json));
  if (arch == "classifier") return make_classifier(ClassifierConfig::from_json(config_json));
  if (arch == "sd_unet") return make_sd_unet(SdUNetConfig::from_json(config_json));
  if (arch == "sd") return std::make_shared<SdNetwork>(SdNetworkConfig::from_json(config_json));
  fail("unknown network architecture '", arch, "' (known: unet, dit, classifier, sd_unet, sd)");
}

}  // namespace tweedie
