// DataOrder: the deterministic, resumable order in which training visits a
// dataset (see dataset.h). Epoch e is a Fisher-Yates shuffle (Knuth, TAOCP
// vol. 2, Algorithm P) driven by splitmix64 (Steele, Lea & Flood 2014) seeded
// with mix(seed, e), with unbiased bounded draws by rejection; no torch RNG is
// involved, so the order is the same on every platform and torch version.
// The cursor (epoch, position) is all the state there is.
// Verified in tests/test_train_data.cpp (TrainDataOrder): same seed -> same
// batches, another seed -> another order, every index exactly once per epoch,
// and resuming from a saved (seed, epoch, position) continues identically.
#include <cstring>
#include <numeric>

#include "tweedie/core/error.h"
#include "tweedie/train/dataset.h"

#include "../core/splitmix.h"

namespace tweedie {

using detail::splitmix64;
using detail::uniform_below;

DataOrder::DataOrder(int64_t size, int64_t batch_size, uint64_t seed, bool drop_last)
    : n_(size), b_(batch_size), drop_last_(drop_last) {
  check(size > 0, "data order: the dataset is empty");
  check(batch_size > 0, "data order: batch size must be > 0, got ", batch_size);
  check(!drop_last || batch_size <= size, "data order: batch size ", batch_size, " exceeds the dataset size ", size,
        " (every batch would be dropped)");
  st_.seed = seed;
}

std::vector<int64_t> DataOrder::permutation(int64_t n, uint64_t seed, int64_t epoch) {
  uint64_t mix = seed;
  uint64_t state = splitmix64(mix) ^ (uint64_t(epoch) * 0xD1B54A32D192ED03ull);
  splitmix64(state);
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), int64_t(0));
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[size_t(i)], p[size_t(uniform_below(state, uint64_t(i) + 1))]);
  return p;
}

torch::Tensor DataOrder::next() {
  const int64_t left = n_ - st_.position;
  if (left <= 0 || (drop_last_ && left < b_)) {
    ++st_.epoch;
    st_.position = 0;
  }
  if (perm_epoch_ != st_.epoch) {
    perm_ = permutation(n_, st_.seed, st_.epoch);
    perm_epoch_ = st_.epoch;
  }
  const int64_t take = std::min(b_, n_ - st_.position);
  auto out = torch::from_blob(perm_.data() + st_.position, {take}, torch::kInt64).clone();
  st_.position += take;
  return out;
}

void DataOrder::restore(const State& s) {
  check(s.epoch >= 0, "data order state: epoch must be >= 0, got ", s.epoch);
  check(s.position >= 0 && s.position <= n_, "data order state: position ", s.position, " is outside [0, ", n_,
        "] for a dataset of ", n_);
  st_ = s;
  perm_epoch_ = -1;
}

std::vector<std::pair<std::string, torch::Tensor>> DataOrder::state_tensors() const {
  int64_t seed_bits;
  std::memcpy(&seed_bits, &st_.seed, sizeof seed_bits);
  return {{"data.seed", torch::tensor({seed_bits}, torch::kInt64)},
          {"data.epoch", torch::tensor({st_.epoch}, torch::kInt64)},
          {"data.position", torch::tensor({st_.position}, torch::kInt64)}};
}

void DataOrder::load_state(const std::function<const torch::Tensor*(const std::string&)>& lookup) {
  auto get = [&](const char* key) {
    const torch::Tensor* t = lookup(key);
    check(t != nullptr && t->numel() == 1, "data order state lacks '", key, "'");
    return t->to(torch::kInt64).item<int64_t>();
  };
  State s;
  const int64_t seed_bits = get("data.seed");
  std::memcpy(&s.seed, &seed_bits, sizeof seed_bits);
  s.epoch = get("data.epoch");
  s.position = get("data.position");
  restore(s);
}

}  // namespace tweedie
