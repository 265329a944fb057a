// Bounded whole-file reads: every file the engine reads into memory (configs, requests, tokenizer
// files) goes through here, so an oversized or unreadable file is one clear error naming it.
#pragma once

#include <cstddef>
#include <string>

#include "core/status.h"

namespace mistral {

// Reads `path` whole. Errors name the file: missing, unreadable, not a regular file, or larger
// than `max_bytes` (refused before allocating).
Result<std::string> read_file(const std::string& path, size_t max_bytes);

// Bound for small JSON files a user hands us (config.json, params.json, requests).
inline constexpr size_t kMaxJsonFileBytes = size_t{64} << 20;

}  // namespace mistral
