#include "mistral/engine.h"

#include "core/thread_pool.h"

namespace mistral {

Result<std::unique_ptr<Engine>> Engine::load(const std::string& checkpoint_dir,
                                             const EngineOptions& options) {
  if (options.threads < 0)
    return error("threads must be >= 0, got " + std::to_string(options.threads));
  ThreadPool::set_default_threads(options.threads);
  MISTRAL_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, make_backend(options.device));
  MISTRAL_ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                           load_model(checkpoint_dir, std::move(backend), options.load));
  return std::unique_ptr<Engine>(new Engine(std::move(model)));
}

Result<KvCache> Engine::new_cache(int64_t batch, int64_t max_sequence_length,
                                  std::optional<DType> kv_cache_dtype,
                                  const KvCacheLayout& layout) const {
  return model_->new_cache(batch, max_sequence_length, kv_cache_dtype, layout);
}

Result<ForwardOutput> Engine::forward(std::span<const int32_t> input_ids,
                                      std::span<const uint8_t> attention_mask, int64_t batch,
                                      KvCache& cache, const ForwardOptions& options) {
  return model_->forward(input_ids, attention_mask, batch, cache, options);
}

Result<GenerationResult> Engine::generate(const std::vector<std::vector<int32_t>>& prompts,
                                          const GenerationConfig& config) {
  return mistral::generate(*model_, prompts, config);
}

Status Engine::save(const std::string& dir, const SaveOptions& options) {
  return save_checkpoint(model_->config(), model_->mutable_weights(), dir, options);
}

}  // namespace mistral
