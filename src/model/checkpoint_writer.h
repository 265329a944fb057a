// Writing a model back to disk in Hugging Face layout (config.json + model.safetensors, or shards
// with an index past max_shard_bytes), atomically per file. Weights are written in `dtype`
// (default: the config's dtype); norms and matrices alike, as save_pretrained does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/status.h"
#include "model/config.h"
#include "model/weights.h"

namespace mistral {

inline constexpr uint64_t kDefaultMaxShardBytes = 5ull << 30;  // save_pretrained's "5GB"

struct SaveOptions {
  std::optional<DType> dtype;
  uint64_t max_shard_bytes = kDefaultMaxShardBytes;
};

Status save_checkpoint(const ModelConfig& config, ModelWeights& weights, const std::string& dir,
                       const SaveOptions& options = {});

// Writes a checkpoint of `config`'s exact shape with random weights: matrices ~ N(0, std^2),
// norm weights 1, deterministic from `seed` whatever the thread count. Streams tensor by tensor,
// so a 7B checkpoint needs about one tensor of memory.
Status write_random_checkpoint(const ModelConfig& config, const std::string& dir, DType dtype,
                               uint64_t seed, float stddev = 0.02f,
                               uint64_t max_shard_bytes = kDefaultMaxShardBytes);

}  // namespace mistral
