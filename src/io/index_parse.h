// Private to io/: the file-free half of reading a Hugging Face `*.safetensors.index.json`, split
// from WeightSource so that it can be fuzzed and reused by the checkpoint writer.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace mistral::io_internal {

struct WeightMapEntry {
  std::string tensor;
  std::string shard;  // relative to the index's directory, lexically normalized
};

// Parses `text`: a JSON object with an object "weight_map" of tensor name -> shard path (other
// top-level keys, such as "metadata", are ignored). Rejects duplicate keys, non-string paths, an
// empty map and unsafe shard paths (see normalize_shard_path). Entries come sorted by tensor name.
// `source` prefixes every message.
Result<std::vector<WeightMapEntry>> parse_weight_map(std::string_view text,
                                                     const std::string& source);

// A shard path must stay inside the index's directory: non-empty, relative, no ".." component, no
// NUL byte, and naming a file rather than the directory itself. Returns it lexically normalized so
// that "a.safetensors" and "./a.safetensors" name the same shard.
Result<std::string> normalize_shard_path(std::string_view path);

}  // namespace mistral::io_internal
