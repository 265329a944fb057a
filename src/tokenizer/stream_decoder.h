// StreamDecoder: turns generated ids into text one id at a time, for `generate` and `chat`.
// It never emits part of a UTF-8 character, and the concatenation of everything push() and
// finish() return equals tokenizer.decode(all ids). It borrows the tokenizer (which must outlive
// it) and holds a small window of recent ids; one instance per sequence, not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "tokenizer/tokenizer.h"

namespace mistral {

class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}

  // Adds one id; returns the text that became final (often empty while a multi-byte character
  // is incomplete). An id out of range is an error and leaves the decoder unchanged.
  Result<std::string> push(int32_t id);
  // Returns the text still held back (an unfinished character decodes as U+FFFD, exactly as in
  // a full decode) and resets the decoder for a new sequence.
  std::string finish();
  void reset();

 private:
  void maybe_shrink_window(const std::string& window_text);

  const Tokenizer& tokenizer_;
  std::vector<int32_t> window_;  // the ids whose decode is `emitted_` bytes + held-back text
  size_t emitted_ = 0;           // bytes of decode(window_) already returned
};

}  // namespace mistral
