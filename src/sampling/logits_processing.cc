#include "sampling/logits_processing.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/check.h"

namespace mistral {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

// The softmax of a row as torch computes it on CPU: exp(x - max) in float, normalized by the sum.
// The sum is taken in double; probabilities differ from torch's by a few ulps at most. With +inf
// entries (which torch turns into NaN) the +inf entries share the mass.
class Softmax {
 public:
  explicit Softmax(std::span<const float> logits) : max_(max_logit(logits)) {
    for (float x : logits) sum_ += weight(x);
  }
  bool empty() const { return max_ == kNegInf; }
  float max() const { return max_; }
  double sum() const { return sum_; }
  float weight(float x) const {
    if (max_ == kPosInf) return x == kPosInf ? 1.0f : 0.0f;
    return x > kNegInf ? std::exp(x - max_) : 0.0f;  // NaN fails the test too
  }
  float prob(float x) const { return empty() ? 0.0f : static_cast<float>(weight(x) / sum_); }

 private:
  float max_;
  double sum_ = 0.0;
};

}  // namespace

float max_logit(std::span<const float> logits) {
  float best = kNegInf;
  for (float x : logits) {
    if (x > best) best = x;
  }
  return best;
}

void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> seen_ids,
                              float penalty) {
  MISTRAL_CHECK(penalty > 0.0f) << "repetition penalty " << penalty;
  if (penalty == 1.0f || seen_ids.empty()) return;
  std::vector<uint8_t> done(logits.size(), 0);
  for (int32_t id : seen_ids) {
    if (id < 0 || static_cast<size_t>(id) >= logits.size() || done[id]) continue;
    done[id] = 1;
    float& x = logits[id];
    x = x < 0.0f ? x * penalty : x / penalty;
  }
}

void apply_temperature(std::span<float> logits, float temperature) {
  MISTRAL_CHECK(temperature > 0.0f) << "temperature " << temperature;
  if (temperature == 1.0f) return;
  for (float& x : logits) x /= temperature;
}

void apply_top_k(std::span<float> logits, int top_k) {
  if (top_k <= 0 || static_cast<size_t>(top_k) >= logits.size()) return;
  std::vector<float> values(logits.begin(), logits.end());
  for (float& v : values) {
    if (std::isnan(v)) v = kNegInf;  // NaN would break nth_element's ordering
  }
  auto kth = values.begin() + (top_k - 1);
  std::nth_element(values.begin(), kth, values.end(), std::greater<float>());
  const float threshold = *kth;
  for (float& x : logits) {
    if (x < threshold) x = kNegInf;
  }
}

void apply_top_p(std::span<float> logits, float top_p) {
  MISTRAL_CHECK(top_p > 0.0f && top_p <= 1.0f) << "top_p " << top_p;
  if (top_p >= 1.0f) return;
  const Softmax softmax(logits);
  if (softmax.empty()) return;
  // HF compares float32 cumulative probabilities with 1 - top_p rounded to float32.
  const float cut = static_cast<float>(1.0 - static_cast<double>(top_p));
  // Entries of probability below cut / (2 V) sort before all others and together hold less than
  // cut / 2, so HF removes them all: found in logit space (double, so no rounding near the
  // factor-2 margin), never sorted. After top-k only the k survivors are left to sort.
  const double log_prune =
      std::log(cut / (2.0 * static_cast<double>(logits.size())) * softmax.sum());
  double kept_weight = 0.0;
  std::vector<int32_t> order;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float x = logits[i];
    if (!(x > kNegInf)) continue;
    if (static_cast<double>(x) - softmax.max() < log_prune) {
      logits[i] = kNegInf;
    } else {
      kept_weight += softmax.weight(x);
      order.push_back(static_cast<int32_t>(i));
    }
  }
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] < logits[b] || (logits[a] == logits[b] && a < b);
  });
  // torch's CPU cumsum accumulates float32 probabilities in double, too.
  double cumulative = (softmax.sum() - kept_weight) / softmax.sum();  // the pruned prefix
  for (size_t j = 0; j + 1 < order.size(); ++j) {  // the last (largest) entry always stays
    cumulative += softmax.prob(logits[order[j]]);
    if (!(static_cast<float>(cumulative) <= cut)) break;  // the sum only grows from here
    logits[order[j]] = kNegInf;
  }
}

void apply_min_p(std::span<float> logits, float min_p) {
  MISTRAL_CHECK(min_p >= 0.0f && min_p <= 1.0f) << "min_p " << min_p;
  if (min_p == 0.0f) return;
  const float max = max_logit(logits);
  if (max == kNegInf) return;
  // HF's prob < min_p * max_prob is exp(x - max) < min_p: tested in logit space, in double, so
  // without an exp per entry. It agrees with HF's float32 test except within float rounding of
  // the boundary. The largest entry (and every entry tied with it) stays, as min_p <= 1.
  const double log_min_p = std::log(static_cast<double>(min_p));
  for (float& x : logits) {
    if (static_cast<double>(x) - max < log_min_p) x = kNegInf;
  }
}

void softmax(std::span<const float> logits, std::span<float> probs) {
  MISTRAL_CHECK(logits.size() == probs.size()) << logits.size() << " vs " << probs.size();
  const Softmax s(logits);
  for (size_t i = 0; i < logits.size(); ++i) probs[i] = s.prob(logits[i]);
}

void apply_all(const SamplingParams& params, std::span<float> logits,
               std::span<const int32_t> seen_ids) {
  for (float& x : logits) {
    if (std::isnan(x)) x = kNegInf;
  }
  apply_repetition_penalty(logits, seen_ids, params.repetition_penalty);
  if (params.greedy) return;
  apply_temperature(logits, params.temperature);
  apply_top_k(logits, params.top_k);
  apply_top_p(logits, params.top_p);
  apply_min_p(logits, params.min_p);
}

}  // namespace mistral
