// Writing safetensors files and sharded checkpoints, atomically: every file is written to a
// temporary name in the destination directory, flushed to disk, then renamed over the target, so
// a crash leaves the previous file intact and saving over a file that is memory-mapped for reading
// does not disturb the reader (it keeps the old inode).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"

namespace mistral {

struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  // Exactly one of `data` (num_bytes bytes) or `fill` (writes num_bytes bytes into dst; used to
  // stream tensors that are produced on the fly, e.g. random weights) is set.
  const void* data = nullptr;
  std::function<void(uint8_t* dst)> fill;

  uint64_t num_bytes() const;  // product(shape) * dtype_size(dtype)
};

// Writes one safetensors file at `path` (temp + fsync + rename).
Status write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

// Writes `dir`/model.safetensors, or, when the tensors total more than max_shard_bytes,
// `dir`/model-0000K-of-0000N.safetensors plus model.safetensors.index.json (written last), the
// way Hugging Face's save_pretrained lays them out. Removes a stale index or stale shards of the
// other layout only after the new files are in place. Creates `dir` if needed.
Status write_checkpoint_tensors(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                                uint64_t max_shard_bytes,
                                const std::map<std::string, std::string>& metadata = {});

// Writes a small text file atomically (temp + fsync + rename).
Status write_file_atomic(const std::string& path, std::string_view content);

}  // namespace mistral
