// Precompiled header: the torch API surface every translation unit uses.
#pragma once
#include <torch/torch.h>
#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>
