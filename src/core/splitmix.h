// splitmix64 (Steele, Lea & Flood 2014): the portable generator behind every
// random choice that must be the same on every platform and torch version
// (data order, FashionCanvas layouts, Fourier features, Brownian-tree seeds).
#pragma once
#include <cstdint>

namespace tweedie::detail {

// Advance state and return the next value.
inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The value a state z would give next (a stateless mix of z).
inline uint64_t splitmix64_of(uint64_t z) { return splitmix64(z); }

// Uniform integer in [0, bound) without modulo bias (rejection of the top partial block).
inline uint64_t uniform_below(uint64_t& state, uint64_t bound) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t r;
  do r = splitmix64(state);
  while (r >= limit);
  return r % bound;
}

// Uniform double in (0, 1).
inline double uniform_open01(uint64_t& state) { return (double(splitmix64(state) >> 11) + 0.5) / 9007199254740992.0; }

}  // namespace tweedie::detail
