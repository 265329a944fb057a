// In-place transforms of one row of logits (one entry per vocabulary id), each equal to the
// Hugging Face transformers logits processor named beside it (transformers 5.24,
// generation/logits_process.py, with min_tokens_to_keep = 1). Entries a filter removes become -inf.
// Free functions without state: safe to call concurrently on different rows.
//
// apply_all uses HF's order (GenerationMixin._get_logits_processor): the repetition penalty is a
// "processor" and runs first, in greedy decoding too; the "warpers" follow only when sampling, in
// the order temperature, top-k, top-p, min-p. So min-p sees the temperature-scaled, top-k/top-p
// filtered distribution, and top-k keeps its k tokens counted before top-p cuts.
#pragma once

#include <cstdint>
#include <span>

#include "sampling/sampling_params.h"

namespace mistral {

// RepetitionPenaltyLogitsProcessor: each distinct id in `seen_ids` (prompt and generated tokens)
// is penalized once: x < 0 ? x * penalty : x / penalty. Ids outside [0, logits.size()) are
// ignored (HF drops ids past the row, too). penalty > 0; 1 leaves the row unchanged.
void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> seen_ids,
                              float penalty);

// TemperatureLogitsWarper: x / temperature, temperature > 0.
void apply_temperature(std::span<float> logits, float temperature);

// TopKLogitsWarper: removes entries below the k-th largest value, so every entry tied with it
// stays (more than k may survive). top_k <= 0 or >= the row size leaves the row unchanged.
void apply_top_k(std::span<float> logits, int top_k);

// TopPLogitsWarper: sorts ascending (ties by ascending id, as torch's stable sort), takes the
// cumulative softmax and removes entries whose cumulative probability is <= 1 - top_p; the
// largest entry always stays. top_p in (0, 1]; 1 leaves the row unchanged. Sorts only entries
// above -inf whose probability could reach the cut, so it is cheap after top-k.
void apply_top_p(std::span<float> logits, float top_p);

// MinPLogitsWarper: removes entries whose probability is below min_p times the largest one.
// min_p in [0, 1]; 0 leaves the row unchanged.
void apply_min_p(std::span<float> logits, float min_p);

// Probabilities of `logits` into `probs` (same size). NaN counts as -inf; a row with no entry
// above -inf gives all zeros; +inf entries share the mass equally.
void softmax(std::span<const float> logits, std::span<float> probs);

// Largest entry ignoring NaN; -inf for an empty row or one of only NaN and -inf.
float max_logit(std::span<const float> logits);

// NaN entries become -inf (HF would let them poison the softmax), then the transforms above in
// HF's order; greedy params get the repetition penalty only. `params` must pass validate().
void apply_all(const SamplingParams& params, std::span<float> logits,
               std::span<const int32_t> seen_ids);

}  // namespace mistral
