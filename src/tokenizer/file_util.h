// Bounded whole-file reads for the tokenizer loaders.
#pragma once

#include <cstddef>
#include <string>

#include "core/status.h"

namespace mistral::tokenizer_internal {

// Tokenizer files are at most tens of MB; anything larger is refused before allocating.
inline constexpr size_t kMaxTokenizerFileBytes = size_t{512} << 20;
// No real vocabulary entry comes near this; a longer one marks a corrupt or hostile file.
inline constexpr size_t kMaxPieceBytes = size_t{64} << 10;
// Mistral vocabularies have 32000 to 131072 entries.
inline constexpr size_t kMaxVocabSize = size_t{1} << 22;

// Reads `path` whole; errors name the file.
Result<std::string> read_file(const std::string& path, size_t max_bytes = kMaxTokenizerFileBytes);

}  // namespace mistral::tokenizer_internal
