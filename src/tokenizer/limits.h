// Size bounds for tokenizer files (read with core/file_util.h).
#pragma once

#include <cstddef>
#include <string>

#include "core/file_util.h"
#include "core/status.h"

namespace mistral::tokenizer_internal {

// Tokenizer files are at most tens of MB; anything larger is refused before allocating.
inline constexpr size_t kMaxTokenizerFileBytes = size_t{512} << 20;
// No real vocabulary entry comes near this; a longer one marks a corrupt or hostile file.
inline constexpr size_t kMaxPieceBytes = size_t{64} << 10;
// Mistral vocabularies have 32000 to 131072 entries.
inline constexpr size_t kMaxVocabSize = size_t{1} << 22;

}  // namespace mistral::tokenizer_internal
