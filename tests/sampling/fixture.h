// The Hugging Face fixture (tests/sampling/fixtures.json, from tools/make_sampling_fixtures.py),
// parsed once. Rows hold -inf where the file has null.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sampling/sampling_params.h"

namespace mistral::testing {

struct FixtureCase {
  std::string name;
  std::vector<float> logits;
  std::vector<int32_t> seen_ids;
  SamplingParams params;
  std::vector<float> expected;  // after HF's processors
  std::vector<int32_t> survivors;
};

struct RngCase {
  uint64_t seed;
  std::vector<uint64_t> outputs;
};

struct Fixture {
  std::string transformers_version;
  std::vector<FixtureCase> cases;
  std::vector<RngCase> rng;
};

const Fixture& fixture();

// Softmax in double of a processed row (-inf entries get 0): the distribution HF samples from.
std::vector<double> reference_probs(const std::vector<float>& processed);

}  // namespace mistral::testing
