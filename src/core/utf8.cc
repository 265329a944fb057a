#include "core/utf8.h"

#include <cstdint>

namespace mistral::utf8 {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// Decodes one well-formed sequence at s[i]. Returns its length, or 0 if ill-formed; in that case
// *subpart is the length of the maximal subpart (>= 1) to replace by one U+FFFD.
size_t sequence_length(std::string_view s, size_t i, size_t* subpart, bool* truncated = nullptr) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t b0 = byte(i);
  if (b0 < 0x80) return 1;
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte (Unicode Table 3-7)
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    *subpart = 1;
    return 0;
  }
  size_t k = 1;
  for (; k < need; ++k) {
    if (i + k >= s.size()) break;
    const uint8_t b = byte(i + k);
    const uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) break;
  }
  if (k == need) return need;
  *subpart = k;
  if (truncated != nullptr) *truncated = i + k >= s.size();
  return 0;
}

}  // namespace

size_t valid_prefix_length(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    // Fast path over ASCII.
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    size_t subpart = 0;
    const size_t n = sequence_length(s, i, &subpart);
    if (n == 0) return i;
    i += n;
  }
  return i;
}

std::string replace_invalid(std::string_view s) {
  size_t valid = valid_prefix_length(s);
  if (valid == s.size()) return std::string(s);
  std::string out(s.substr(0, valid));
  size_t i = valid;
  while (i < s.size()) {
    size_t subpart = 0;
    const size_t n = sequence_length(s, i, &subpart);
    if (n == 0) {
      out += kReplacement;
      i += subpart;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

void append_code_point(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

size_t incomplete_tail_length(std::string_view s) {
  // Look at most 3 bytes back for a lead byte whose sequence runs past the end but is a valid
  // prefix so far.
  const size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const size_t i = n - back;
    const uint8_t b = static_cast<uint8_t>(s[i]);
    if (b < 0x80) return 0;
    if (b >= 0xC0) {
      size_t subpart = 0;
      bool truncated = false;
      if (sequence_length(s, i, &subpart, &truncated) != 0) return 0;  // complete
      return truncated && subpart == back ? back : 0;  // a valid but unfinished prefix
    }
  }
  return 0;
}

size_t trailing_replacement_bytes(std::string_view s) {
  size_t n = 0;
  while (s.size() >= n + 3 && s.substr(s.size() - n - 3, 3) == kReplacement) n += 3;
  return n;
}

std::string_view valid_or_replaced(std::string_view s, std::string& storage) {
  if (valid_prefix_length(s) == s.size()) return s;
  storage = replace_invalid(s);
  return storage;
}

}  // namespace mistral::utf8
