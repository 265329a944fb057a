// JSON parsing that refuses what nlohmann::json::parse accepts silently, for every untrusted file
// the engine reads (safetensors headers, shard indexes, config.json, params.json), and a duplicate key that the parser
// resolves as "last one wins" would let two readers of the same file disagree about its tensors.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace mistral::io_internal {

// Deep enough for any header or index (they nest 3 levels); shallow enough that recursive
// traversals of the parsed value (destruction, dump) cannot exhaust the stack.
inline constexpr size_t kMaxJsonDepth = 64;

// Byte offset of the first byte that is not part of well-formed UTF-8 (RFC 3629: no overlong
// forms, no surrogates, nothing above U+10FFFF), or nullopt when all of `text` is valid.
std::optional<size_t> find_invalid_utf8(std::string_view text);

// Parses one JSON document (surrounding whitespace allowed). Rejects invalid UTF-8, a byte-order
// mark, duplicate object keys at any depth and nesting deeper than kMaxJsonDepth. The message does
// not name the source; callers add it.
Result<nlohmann::json> parse_json_strict(std::string_view text);

// A string quoted and escaped as JSON (invalid UTF-8 replaced by U+FFFD), so that error messages
// naming untrusted keys stay printable.
std::string json_quoted(std::string_view text);

// "an object", "a string", ... for messages about a value of the wrong type.
std::string describe_type(const nlohmann::json& value);

}  // namespace mistral::io_internal
