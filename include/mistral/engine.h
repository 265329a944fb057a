// The public C++ API: load a Mistral checkpoint once, then run forward passes and generations on
// it. Everything a caller needs comes through this header (Status/Result, ModelConfig,
// GenerationConfig, SamplingParams, KvCache, ForwardOutput).
//
//   auto engine = mistral::Engine::load("path/to/checkpoint");
//   if (!engine.ok()) { /* engine.status().message() names the file and field */ }
//   mistral::GenerationConfig gen;
//   gen.max_new_tokens = 32;
//   gen.sampling.greedy = true;
//   gen.kv_cache_dtype = mistral::DType::kBF16;  // optional: F32 (default), BF16, F16, I8
//   auto out = (*engine)->generate({{1, 415, 2936}}, gen);
//
// The KV cache can be stored in F32 (exact, the CPU's default), BF16 or F16 (half the memory;
// values rounded to nearest even) or I8 (about a quarter: int8 values with one float scale per
// token and kv head). Attention reads it in that type; the current call's keys and values stay
// F32. Use parse_kv_cache_dtype("f32" | "bf16" | "f16" | "int8") to read the type from text.
// EngineOptions::device = "cuda" runs the model on a GPU (bf16 activations and KV cache).
//
// An Engine owns its model; calls on one Engine must not overlap (one request at a time).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "engine/generator.h"
#include "model/checkpoint_writer.h"
#include "model/kv_cache.h"
#include "model/loader.h"
#include "model/model.h"

namespace mistral {

struct EngineOptions {
  int threads = 0;   // 0: all cores (process-wide; the first Engine created sets it)
  LoadOptions load;  // e.g. load.dtype = DType::kF32 to widen bf16 weights
  // "cpu", "cuda" or "cuda:N" (builds configured with -DMISTRAL_CUDA=ON). On CUDA the weights
  // are uploaded once and computed in bf16, and the KV cache is bf16.
  std::string device = "cpu";
};

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> load(const std::string& checkpoint_dir,
                                              const EngineOptions& options = {});

  const ModelConfig& config() const { return model_->config(); }
  Model& model() { return *model_; }

  // A cache for `batch` sequences of up to max_sequence_length tokens (a rolling buffer of the
  // sliding window where the model has one) in the device's memory, stored as kv_cache_dtype
  // (F32, BF16, F16 or I8 on the CPU; BF16 on CUDA; default F32 on the CPU, BF16 on CUDA), in
  // blocks as `layout` says (KvCache::set_block_table moves a row's blocks).
  Result<KvCache> new_cache(int64_t batch, int64_t max_sequence_length,
                            std::optional<DType> kv_cache_dtype = std::nullopt,
                            const KvCacheLayout& layout = {}) const;
  // Logits (and optionally hidden states) for input_ids/attention_mask [batch, T], continuing
  // from and advancing `cache`.
  Result<ForwardOutput> forward(std::span<const int32_t> input_ids,
                                std::span<const uint8_t> attention_mask, int64_t batch,
                                KvCache& cache, const ForwardOptions& options = {});
  // Generates with a fresh cache of config.kv_cache_dtype.
  Result<GenerationResult> generate(const std::vector<std::vector<int32_t>>& prompts,
                                    const GenerationConfig& config);
  // Writes the model in Hugging Face layout (atomically; safe over its own directory).
  Status save(const std::string& dir, const SaveOptions& options = {});

 private:
  explicit Engine(std::unique_ptr<Model> model) : model_(std::move(model)) {}
  std::unique_ptr<Model> model_;
};

}  // namespace mistral
