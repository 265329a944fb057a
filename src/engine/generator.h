// Generation for a batch of prompts: left-pads them into one batch, prefills, then decodes one
// token per row per step, with greedy decoding or sampling, stopping at max_new_tokens, at an EOS
// or stop token (when asked), or when the callback says so. Rows that finish early keep their
// slot (fed padding) until every row is done; with decode_ahead, the one step queued before the
// host saw a row finish feeds that row its sampled token instead (its outputs are not used). Not
// thread-safe: one generate() per Model at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "core/status.h"
#include "model/model.h"
#include "sampling/sampling_params.h"

namespace mistral {

struct GenerationConfig {
  int64_t max_new_tokens = 32;
  SamplingParams sampling;              // greedy or sampling; seed for reproducibility
  bool stop_at_eos = false;             // stop a row at any of the model's eos_token_ids
  std::vector<int32_t> stop_token_ids;  // extra stop ids (always honoured)
  // Storage type of the KV cache: F32 (exact), BF16 or F16 (half the memory), or I8 (a quarter
  // plus a float scale per head vector); see model/kv_cache.h. Unset: the backend's default
  // (F32 on the CPU, BF16 on CUDA, which stores only BF16).
  std::optional<DType> kv_cache_dtype;
  // Positions per block of the KV cache's paged memory (model/kv_cache.h); 0: the default, 16
  // (or the cache's length when shorter). Results do not depend on it; memory is rounded up to
  // whole blocks.
  int64_t kv_block_size = 0;
  // Sample on the backend when it can (Backend::supports_sampling) and the parameters allow it
  // (repetition_penalty 1, min_p 0): only token ids then cross to the host. The tokens are the
  // ones host sampling picks from the same logits (same streams, same rule).
  bool sample_on_device = true;
  // With sampling on the backend: queue each decode step before the host has read the token it
  // takes (Model::start_step), so the backend does not wait for the host between steps. A step
  // queued behind a token that ends the generation is taken back from the cache. The tokens are
  // the same either way; false queues each step after the host has seen its token.
  bool decode_ahead = true;
  // Called for every generated token (row, token id); return false to stop the whole batch.
  std::function<bool(int64_t row, int32_t token)> on_token;
};

enum class FinishReason { kLength, kStopToken, kCallback };

struct GenerationResult {
  std::vector<std::vector<int32_t>> new_tokens;  // per row, the stop token included
  std::vector<FinishReason> finish_reasons;
  int64_t prompt_tokens = 0;  // real prompt tokens, all rows together
  double prefill_seconds = 0;
  double decode_seconds = 0;
  int64_t decode_steps = 0;
  uint64_t kv_cache_bytes = 0;  // resident size of the KV cache the generation used
};

// Checks a request without running it: non-empty prompts, ids in the vocabulary, lengths within
// max_position_embeddings, max_new_tokens >= 0, a KV cache type, valid sampling parameters.
Status validate_generation_request(const ModelConfig& config,
                                   const std::vector<std::vector<int32_t>>& prompts,
                                   const GenerationConfig& gen);

Result<GenerationResult> generate(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                  const GenerationConfig& gen);

}  // namespace mistral
