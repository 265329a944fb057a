#include "io/strict_json.h"

#include <cstdint>
#include <utility>
#include <vector>

#include "core/utf8.h"

namespace mistral::io_internal {
namespace {

using json = nlohmann::json;

// Builds a json value from SAX events (the way nlohmann's own DOM parser does) but stops at the
// first duplicate key or at excessive nesting, which nlohmann's parse() cannot report.
class StrictDomBuilder {
 public:
  bool null() { return add(json(nullptr)); }
  bool boolean(bool v) { return add(json(v)); }
  bool number_integer(json::number_integer_t v) { return add(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return add(json(v)); }
  bool number_float(json::number_float_t v, const json::string_t&) { return add(json(v)); }
  bool string(json::string_t& v) { return add(json(std::move(v))); }
  bool binary(json::binary_t&) { return fail("binary values are not JSON"); }

  bool start_object(std::size_t) { return open(json::object()); }
  bool start_array(std::size_t) { return open(json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(json::string_t& k) {
    json* object = stack_.back();
    if (object->contains(k)) {
      return fail("duplicate key " + json_quoted(k) + where());
    }
    key_ = std::move(k);
    return true;
  }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) {
    // nlohmann prefixes "[json.exception.parse_error.101] "; the rest is the useful part.
    std::string what = e.what();
    if (auto pos = what.find("] "); pos != std::string::npos) what = what.substr(pos + 2);
    return fail("invalid JSON: " + what + " (byte " + std::to_string(position) + ")");
  }

  json take() { return std::move(root_); }
  const std::string& error() const { return error_; }

 private:
  bool fail(std::string message) {
    error_ = std::move(message);
    return false;
  }

  // Names the keys leading to the container being filled: ` in "a"/"b"`, or ` at top level`.
  std::string where() const {
    if (path_.size() <= 1) return " at top level";
    std::string out = " in ";
    for (size_t i = 1; i < path_.size(); ++i) {
      if (i > 1) out += "/";
      out += path_[i];
    }
    return out;
  }

  json* put(json value) {
    if (stack_.empty()) {
      root_ = std::move(value);
      return &root_;
    }
    json* parent = stack_.back();
    if (parent->is_array()) {
      parent->push_back(std::move(value));
      return &parent->back();
    }
    json& slot = (*parent)[key_];
    slot = std::move(value);
    return &slot;
  }
  bool add(json value) {
    put(std::move(value));
    return true;
  }

  bool open(json container) {
    if (stack_.size() >= kMaxJsonDepth) {
      return fail("nesting deeper than " + std::to_string(kMaxJsonDepth) + " levels" + where());
    }
    std::string label;
    if (!stack_.empty()) label = stack_.back()->is_array() ? "[]" : json_quoted(key_);
    stack_.push_back(put(std::move(container)));
    path_.push_back(std::move(label));
    return true;
  }
  bool close() {
    stack_.pop_back();
    path_.pop_back();
    return true;
  }

  json root_;
  std::vector<json*> stack_;  // containers being filled, innermost last
  std::vector<std::string> path_;
  std::string key_;
  std::string error_;
};

}  // namespace

std::optional<size_t> find_invalid_utf8(std::string_view text) {
  const size_t valid = utf8::valid_prefix_length(text);
  if (valid == text.size()) return std::nullopt;
  return valid;
}

Result<nlohmann::json> parse_json_strict(std::string_view text) {
  if (auto bad = find_invalid_utf8(text)) {
    return error("not valid UTF-8 (byte " + std::to_string(*bad) + ")");
  }
  if (text.substr(0, 3) == "\xEF\xBB\xBF") {
    return error("starts with a UTF-8 byte-order mark, which JSON forbids");
  }
  StrictDomBuilder builder;
  if (!json::sax_parse(text.begin(), text.end(), &builder)) {
    return error(builder.error());
  }
  return builder.take();
}

std::string json_quoted(std::string_view text) {
  return json(std::string(text)).dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string describe_type(const json& value) {
  switch (value.type()) {
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::null:
      return "null";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a non-integer number";
    default:
      return "an unexpected value";
  }
}

}  // namespace mistral::io_internal
