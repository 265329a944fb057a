#include "tokenizer/py_json.h"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace mistral::py_json {

std::string float_repr(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  // Shortest round-tripping digits, as Python's repr picks them, in scientific form.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  const bool negative = sci[0] == '-';
  if (negative) sci.erase(0, 1);
  const size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  const int exponent = std::stoi(sci.substr(e + 1));
  if (digits.size() > 1) digits.erase(1, 1);  // drop the '.'
  std::string out = negative ? "-" : "";
  const int decpt = exponent + 1;  // position of the decimal point in `digits`
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      out += "0." + std::string(static_cast<size_t>(-decpt), '0') + digits;
    } else if (static_cast<size_t>(decpt) >= digits.size()) {
      out += digits + std::string(static_cast<size_t>(decpt) - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, decpt) + "." + digits.substr(decpt);
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char exp[16];
    std::snprintf(exp, sizeof(exp), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += exp;
  }
  return out;
}

namespace {

void dump_string_to(std::string_view s, std::string& out) {
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char esc[8];
          std::snprintf(esc, sizeof(esc), "\\u%04x", c);
          out += esc;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

}  // namespace

void dump_to(const Json& value, std::string& out) {
  switch (value.type()) {
    case Json::value_t::null:
      out += "null";
      break;
    case Json::value_t::boolean:
      out += value.get<bool>() ? "true" : "false";
      break;
    case Json::value_t::number_integer:
      out += std::to_string(value.get<int64_t>());
      break;
    case Json::value_t::number_unsigned:
      out += std::to_string(value.get<uint64_t>());
      break;
    case Json::value_t::number_float:
      out += float_repr(value.get<double>());
      break;
    case Json::value_t::string:
      dump_string_to(value.get_ref<const std::string&>(), out);
      break;
    case Json::value_t::array: {
      out += '[';
      bool first = true;
      for (const auto& item : value) {
        if (!first) out += ", ";
        first = false;
        dump_to(item, out);
      }
      out += ']';
      break;
    }
    case Json::value_t::object: {
      out += '{';
      bool first = true;
      for (const auto& [key, item] : value.items()) {
        if (!first) out += ", ";
        first = false;
        dump_string_to(key, out);
        out += ": ";
        dump_to(item, out);
      }
      out += '}';
      break;
    }
    case Json::value_t::binary:  // an integer literal too big for 64 bits (see loads)
      out.append(value.get_binary().begin(), value.get_binary().end());
      break;
    default:
      out += "null";
      break;
  }
}

std::string dumps(const Json& value) {
  std::string out;
  dump_to(value, out);
  return out;
}

std::string dumps_string(std::string_view s) {
  std::string out;
  dump_string_to(s, out);
  return out;
}

namespace {

// Builds the value like Python's json.loads: integers of any size keep their digits (stored as
// a binary value holding the literal, which dump_to prints verbatim), duplicate keys keep the
// first position and the last value, nesting is bounded.
class PyJsonBuilder {
 public:
  Json root;

  bool null() { return add(Json(nullptr)); }
  bool boolean(bool v) { return add(Json(v)); }
  bool number_integer(Json::number_integer_t v) { return add(Json(v)); }
  bool number_unsigned(Json::number_unsigned_t v) { return add(Json(v)); }
  bool number_float(Json::number_float_t v, const std::string& literal) {
    if (literal.find_first_of(".eE") == std::string::npos) {  // an integer beyond 64 bits
      return add(Json::binary(std::vector<uint8_t>(literal.begin(), literal.end())));
    }
    return add(Json(v));
  }
  bool string(std::string& v) { return add(Json(std::move(v))); }
  bool binary(Json::binary_t&) { return false; }
  bool start_object(size_t) { return open(Json::object()); }
  bool end_object() { return close(); }
  bool start_array(size_t) { return open(Json::array()); }
  bool end_array() { return close(); }
  bool key(std::string& k) {
    key_ = std::move(k);
    return true;
  }
  bool parse_error(size_t, const std::string&, const nlohmann::detail::exception&) { return false; }

 private:
  static constexpr size_t kMaxDepth = 512;

  Json* insert(Json v) {
    if (stack_.empty()) {
      root = std::move(v);
      return &root;
    }
    Json& top = *stack_.back();
    if (top.is_array()) {
      top.push_back(std::move(v));
      return &top.back();
    }
    Json& slot = top[key_];
    slot = std::move(v);
    return &slot;
  }
  bool add(Json v) {
    insert(std::move(v));
    return true;
  }
  bool open(Json v) {
    if (stack_.size() >= kMaxDepth) return false;
    // Containers only get children appended while they are open, so this pointer stays valid.
    stack_.push_back(insert(std::move(v)));
    return true;
  }
  bool close() {
    stack_.pop_back();
    return true;
  }

  std::vector<Json*> stack_;
  std::string key_;
};

}  // namespace

std::optional<Json> loads(std::string_view text) {
  PyJsonBuilder builder;
  if (!Json::sax_parse(text.begin(), text.end(), &builder)) return std::nullopt;
  return std::move(builder.root);
}

}  // namespace mistral::py_json
