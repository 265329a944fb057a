#include "sampling/sampler.h"

#include <cmath>
#include <limits>

#include "core/check.h"
#include "sampling/logits_processing.h"

namespace mistral {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

// Lowest index of the largest non-NaN entry; 0 when every entry is NaN.
int32_t argmax(std::span<const float> logits) {
  int32_t best = -1;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i])) continue;
    if (best < 0 || logits[i] > logits[best]) best = static_cast<int32_t>(i);
  }
  return best < 0 ? 0 : best;
}

}  // namespace

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  const Status status = validate(params);
  MISTRAL_CHECK(status.ok()) << status.message();
}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> seen_ids) {
  MISTRAL_CHECK(!logits.empty()) << "empty logits row";
  MISTRAL_CHECK(logits.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()))
      << logits.size();
  const bool penalize = params_.repetition_penalty != 1.0f && !seen_ids.empty();
  if (params_.greedy && !penalize) return argmax(logits);
  const int32_t raw_best = argmax(logits);
  apply_all(params_, logits, seen_ids);
  if (params_.greedy) return max_logit(logits) == kNegInf ? raw_best : argmax(logits);
  return draw(logits, raw_best);
}

// Inverse-CDF draw over exp(x - max), summed in double. The same additions in the same order give
// the running sum and the total, so the target below the total is always reached, except when
// rounding lifts u * total to the total: then the last token of positive weight is taken.
int32_t Sampler::draw(std::span<float> logits, int32_t fallback) {
  const double u = rng_.next_double();
  const float max = max_logit(logits);
  if (max == kNegInf) return fallback;
  double total = 0.0;
  for (float& x : logits) {  // logits become the weights
    if (max == kPosInf) {
      x = x == kPosInf ? 1.0f : 0.0f;
    } else {
      x = x > kNegInf ? std::exp(x - max) : 0.0f;
    }
    total += x;
  }
  const double target = u * total;
  double running = 0.0;
  int32_t last = fallback;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] == 0.0f) continue;
    running += logits[i];
    last = static_cast<int32_t>(i);
    if (running > target) return last;
  }
  return last;
}

}  // namespace mistral
