#include "engine/generator.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>

#include "sampling/sampler.h"

namespace mistral {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Status validate_generation_request(const ModelConfig& config,
                                   const std::vector<std::vector<int32_t>>& prompts,
                                   const GenerationConfig& gen) {
  if (prompts.empty()) return error("prompts: at least one prompt is required");
  for (size_t r = 0; r < prompts.size(); ++r) {
    if (prompts[r].empty()) return error("prompt " + std::to_string(r) + " is empty");
    for (size_t i = 0; i < prompts[r].size(); ++i) {
      const int32_t id = prompts[r][i];
      if (id < 0 || id >= config.vocab_size) {
        return error("prompt " + std::to_string(r) + " token " + std::to_string(i) + " = " +
                     std::to_string(id) + " is outside the vocabulary [0, " +
                     std::to_string(config.vocab_size) + ")");
      }
    }
  }
  if (gen.max_new_tokens < 0) {
    return error("max_new_tokens must be >= 0, got " + std::to_string(gen.max_new_tokens));
  }
  size_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, p.size());
  if (gen.max_new_tokens > config.max_position_embeddings ||
      static_cast<int64_t>(longest) + gen.max_new_tokens > config.max_position_embeddings) {
    return error("prompt (" + std::to_string(longest) + " tokens) + max_new_tokens (" +
                 std::to_string(gen.max_new_tokens) + ") exceeds the context of " +
                 std::to_string(config.max_position_embeddings) + " tokens");
  }
  if (gen.kv_cache_dtype && !is_kv_cache_dtype(*gen.kv_cache_dtype)) {
    return error("kv_cache_dtype: " + std::string(dtype_name(*gen.kv_cache_dtype)) +
                 " is not one of f32, bf16, f16, int8");
  }
  if (gen.kv_block_size < 0 || gen.kv_block_size > INT32_MAX) {
    return error("kv_block_size must be in [1, " + std::to_string(INT32_MAX) +
                 "] (or 0 for the default), got " + std::to_string(gen.kv_block_size));
  }
  for (int32_t id : gen.stop_token_ids) {
    if (id < 0 || id >= config.vocab_size) {
      return error("stop token id " + std::to_string(id) + " is outside the vocabulary");
    }
  }
  return validate(gen.sampling);
}

Result<GenerationResult> generate(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                  const GenerationConfig& gen) {
  const ModelConfig& config = model.config();
  MISTRAL_RETURN_IF_ERROR(validate_generation_request(config, prompts, gen));
  const int64_t batch = static_cast<int64_t>(prompts.size());
  int64_t longest = 0;
  GenerationResult result;
  for (const auto& p : prompts) {
    longest = std::max<int64_t>(longest, p.size());
    result.prompt_tokens += static_cast<int64_t>(p.size());
  }
  result.new_tokens.resize(batch);
  result.finish_reasons.assign(batch, FinishReason::kLength);
  if (gen.max_new_tokens == 0) return result;

  KvCacheLayout layout;
  layout.block_size = gen.kv_block_size;
  MISTRAL_ASSIGN_OR_RETURN(KvCache cache, model.new_cache(batch, longest + gen.max_new_tokens,
                                                          gen.kv_cache_dtype, layout));
  result.kv_cache_bytes = cache.bytes();
  const int32_t pad = static_cast<int32_t>(config.pad_token_id.value_or(0));

  // Left-pad into one [batch, longest] block.
  std::vector<int32_t> ids(batch * longest, pad);
  std::vector<uint8_t> mask(batch * longest, 0);
  std::vector<std::vector<int32_t>> seen(batch);  // prompt + generated, for repetition penalty
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t offset = longest - static_cast<int64_t>(prompts[b].size());
    std::copy(prompts[b].begin(), prompts[b].end(), ids.begin() + b * longest + offset);
    std::fill(mask.begin() + b * longest + offset, mask.begin() + (b + 1) * longest, 1);
    seen[b] = prompts[b];
  }
  std::vector<Sampler> samplers;
  for (int64_t b = 0; b < batch; ++b) {
    SamplingParams p = gen.sampling;
    p.seed = gen.sampling.seed + static_cast<uint64_t>(b);  // rows draw independent streams
    samplers.emplace_back(p);
  }
  std::vector<int32_t> stop_ids = gen.stop_token_ids;
  if (gen.stop_at_eos) {
    for (int64_t id : config.eos_token_ids) stop_ids.push_back(static_cast<int32_t>(id));
  }
  std::vector<bool> done(batch, false);

  ForwardOptions options;
  options.all_logits = false;
  const SamplingParams& sp = gen.sampling;
  SamplerState device_sampler;
  if (gen.sample_on_device && model.backend().supports_sampling() &&
      sp.repetition_penalty == 1.0f && sp.min_p == 0.0f) {
    std::vector<SamplingRow> rows(batch);
    for (int64_t b = 0; b < batch; ++b) {
      rows[b] = {sp.greedy, sp.temperature, sp.top_k, sp.top_p, samplers[b].params().seed};
    }
    MISTRAL_ASSIGN_OR_RETURN(device_sampler, model.new_sampler(rows));
    options.sampler = &device_sampler;
  }
  auto start = std::chrono::steady_clock::now();
  MISTRAL_ASSIGN_OR_RETURN(ForwardOutput out, model.forward(ids, mask, batch, cache, options));
  result.prefill_seconds = seconds_since(start);
  start = std::chrono::steady_clock::now();

  std::vector<int32_t> step_ids(batch);
  std::vector<uint8_t> step_mask(batch, 1);
  const int64_t vocab = config.vocab_size;
  const bool ahead = gen.decode_ahead && options.sampler != nullptr;
  // Steps started ahead are taken back however this returns (an error included), so that the
  // model takes further calls.
  struct CancelStarted {
    Model& model;
    KvCache& cache;
    ~CancelStarted() { (void)model.cancel_steps(cache); }
  } cancel_started{model, cache};
  // Each pass takes token `step` of every row (out) and gets token step + 1. Ahead, the step that
  // takes token `step` was started before the host read it (unless it is the first, or a row has
  // finished since), and the step after it is started before its result is awaited.
  for (int64_t step = 0;; ++step) {
    bool stop_all = false;
    for (int64_t b = 0; b < batch; ++b) {
      if (done[b]) {
        step_ids[b] = pad;
        continue;
      }
      int32_t token;
      if (options.sampler != nullptr) {
        token = out.token_ids[b];
      } else {
        std::span<float> logits(out.logits.data() + b * vocab, vocab);
        token = samplers[b].sample(logits, seen[b]);
      }
      step_ids[b] = token;
      seen[b].push_back(token);
      result.new_tokens[b].push_back(token);
      if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
        done[b] = true;
        result.finish_reasons[b] = FinishReason::kStopToken;
      }
      if (gen.on_token && !gen.on_token(b, token)) {
        stop_all = true;
        break;
      }
    }
    if (stop_all) {
      for (int64_t b = 0; b < batch; ++b) {
        if (!done[b]) result.finish_reasons[b] = FinishReason::kCallback;
      }
    }
    const bool all_done = std::all_of(done.begin(), done.end(), [](bool d) { return d; });
    // The last token needs no forward pass.
    if (stop_all || all_done || step + 1 == gen.max_new_tokens) {
      MISTRAL_RETURN_IF_ERROR(model.cancel_steps(cache));  // a step started for nothing
      break;
    }
    const bool any_done = std::any_of(done.begin(), done.end(), [](bool d) { return d; });
    if (ahead && !any_done) {
      if (model.started_steps() == 0) MISTRAL_RETURN_IF_ERROR(model.start_step(cache, options));
      if (step + 2 < gen.max_new_tokens) {
        MISTRAL_RETURN_IF_ERROR(model.start_step(cache, options));  // queued behind
      }
    }
    if (model.started_steps() > 0) {
      MISTRAL_ASSIGN_OR_RETURN(out.token_ids, model.finish_step());
    } else {
      MISTRAL_ASSIGN_OR_RETURN(out, model.forward(step_ids, step_mask, batch, cache, options));
    }
    ++result.decode_steps;
  }
  result.decode_seconds = seconds_since(start);
  return result;
}

}  // namespace mistral
