// SamplingParams: how one sequence picks its next token, and validate(), which turns a bad request
// into a Status naming the parameter. A plain value type.
#pragma once

#include <cstdint>

#include "core/status.h"

namespace mistral {

// Temperatures above this flatten any model's distribution to near-uniform noise; a larger value
// is almost surely a client bug (e.g. a percentage), so it is refused rather than obeyed.
inline constexpr float kMaxTemperature = 100.0f;

struct SamplingParams {
  bool greedy = false;  // argmax (after the repetition penalty); the other warpers are ignored
  float temperature = 1.0f;
  int top_k = 0;  // 0 = off
  float top_p = 1.0f;
  float min_p = 0.0f;  // 0 = off
  float repetition_penalty = 1.0f;
  uint64_t seed = 0;
};

// Ok, or an error whose message names the first bad parameter and its value:
//   temperature: NaN, infinite, negative, > kMaxTemperature, or 0 unless greedy;
//   top_k < 0; top_p NaN or outside (0, 1]; min_p NaN or outside [0, 1];
//   repetition_penalty NaN, infinite or <= 0.
Status validate(const SamplingParams& params);

}  // namespace mistral
