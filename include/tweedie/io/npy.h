// NumPy .npy arrays (format version 1.0/2.0, C order): float32 written,
// float32/float64/float16 and int64/int32 read. Malformed files get an Error
// naming the file and what is wrong.
#pragma once
#include <string>

#include <torch/types.h>

namespace tweedie {

torch::Tensor load_npy(const std::string& path);
void save_npy(const std::string& path, const torch::Tensor& t);  // atomic; float32 unless integer

}  // namespace tweedie
