// JSON text exactly as Python's json module writes it, because Mistral's chat formats embed
// `json.dumps(obj, ensure_ascii=False)` output in the prompt: ", " and ": " separators, key order
// kept, floats as Python's repr, only '"', '\\' and control characters escaped. Stateless.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace mistral::py_json {

using Json = nlohmann::ordered_json;

// json.dumps(value, ensure_ascii=False).
std::string dumps(const Json& value);
void dump_to(const Json& value, std::string& out);
// json.dumps of a string.
std::string dumps_string(std::string_view s);
// repr(float) for a finite double.
std::string float_repr(double value);
// json.loads(text), or nullopt where Python would raise JSONDecodeError. (One difference: the
// NaN / Infinity literals Python accepts are rejected here.) Integers beyond 64 bits are kept
// verbatim as a binary value that dumps() prints as the integer.
std::optional<Json> loads(std::string_view text);

}  // namespace mistral::py_json
