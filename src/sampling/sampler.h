// Sampler: picks the next token of one sequence from a row of logits. Owns its parameters and its
// random stream, nothing else. Not thread-safe: one Sampler per sequence (the stream advances on
// every call, so sharing one between sequences would also couple their outputs).
#pragma once

#include <cstdint>
#include <span>

#include "sampling/rng.h"
#include "sampling/sampling_params.h"

namespace mistral {

class Sampler {
 public:
  // `params` must pass validate() (checked; a bad one aborts, since requests are validated first).
  explicit Sampler(const SamplingParams& params);

  // `logits`: one row, one entry per vocabulary id (non-empty); used as scratch, its contents on
  // return are unspecified. `seen_ids`: the prompt and the tokens generated so far, for the
  // repetition penalty; ids outside the row are ignored.
  // Greedy: the lowest index of the largest entry after the repetition penalty, like
  // torch.argmax. Otherwise apply_all (HF's order) and one draw from the resulting softmax,
  // consuming exactly one 64-bit output of the stream, so a seed fixes the whole sequence.
  // NaN entries are never chosen; when nothing above -inf is left (all -inf or NaN, or overflow
  // under the penalty or temperature), the result is the argmax of the raw row (0 if all NaN).
  // Portability: the stream and the selection rule are exact integer/IEEE arithmetic; the weights
  // use std::exp, so C libraries whose exp differ in the last bit could pick a neighbouring token
  // when a draw lands within that rounding of a boundary (rare next to differences in the logits).
  int32_t sample(std::span<float> logits, std::span<const int32_t> seen_ids);

  const SamplingParams& params() const { return params_; }

 private:
  int32_t draw(std::span<float> logits, int32_t fallback);

  SamplingParams params_;
  Xoshiro256 rng_;
};

}  // namespace mistral
