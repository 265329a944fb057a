// UTF-8 helpers: validation, replacement of ill-formed input, streaming boundaries. Used by the
// tokenizers, the stream decoder and the strict JSON reader. Stateless functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace mistral::utf8 {

// Length of the longest prefix of `s` that is well-formed UTF-8.
size_t valid_prefix_length(std::string_view s);

// Returns `s` with every ill-formed sequence replaced by U+FFFD, one replacement per maximal
// subpart (Unicode's recommended practice, which is also Python's bytes.decode("utf-8",
// "replace") and tiktoken's decode).
std::string replace_invalid(std::string_view s);

// `s` itself when it is well-formed; otherwise replace_invalid(s), kept alive in `storage`.
std::string_view valid_or_replaced(std::string_view s, std::string& storage);

// Appends the UTF-8 encoding of code point `cp` (assumed valid) to `out`.
void append_code_point(char32_t cp, std::string& out);

// Number of bytes at the end of `s` that form an incomplete but still completable sequence
// (0 to 3): what a streaming decoder must hold back.
size_t incomplete_tail_length(std::string_view s);

// True if `s` ends with one or more U+FFFD characters; returns how many bytes they take.
size_t trailing_replacement_bytes(std::string_view s);

}  // namespace mistral::utf8
