// Normally distributed test data, reproducible from a seed. Shared by every test binary (tests/
// is on their include path).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace mistral::testing {

inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

}  // namespace mistral::testing
