// Networks in safetensors files: the weights under their module paths
// (state_dict names: parameters and buffers), the architecture in the
// metadata ("tweedie.arch", "tweedie.config"), plus any extra metadata.
//
// Loading rebuilds the network from the metadata and requires an exact
// match: every expected tensor present with the right shape, no unexpected
// tensor (dtype is converted). Otherwise an Error names the file, the
// architecture, and a few missing / unexpected / mis-shaped names.
// Verified in tests/test_networks.cpp (bit-identical round trip, errors).
#pragma once
#include <map>
#include <string>

#include "tweedie/models/network.h"

namespace tweedie {

void save_network(const std::string& path, Network& net, const std::map<std::string, std::string>& extra_metadata = {});
// metadata_out (optional) receives the whole "__metadata__". The network is
// returned in eval mode (call train() to train it).
NetworkPtr load_network(const std::string& path, std::map<std::string, std::string>* metadata_out = nullptr);
// Load a file's weights into an existing network (resuming training, EMA
// copies): the file's "tweedie.arch" (if any) must match, and the tensors
// must match by name and shape as above.
void load_network_weights(const std::string& path, Network& net);

// The network's tensors as they are saved (parameters, then buffers).
std::vector<std::pair<std::string, torch::Tensor>> network_tensors(Network& net);

}  // namespace tweedie
