// Regex: a PCRE2 pattern (UTF + UCP, JIT-compiled) for the pre-tokenizer splits of tekken.json and
// tokenizer.json, with `\s` / `\S` rewritten to Unicode White_Space as Rust's regex engines (which
// tiktoken and `tokenizers` use) define it. Immutable after compile(); matching is thread-safe.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "core/status.h"

struct pcre2_real_code_8;

namespace mistral::tokenizer_internal {

class Regex {
 public:
  static Result<Regex> compile(const std::string& pattern);

  // Calls on_match(begin, end) for each successive non-overlapping match in `text` (valid UTF-8),
  // as a regex find-iterator does. Never drops text on a resource limit: the rest of the text is
  // then reported as one match.
  template <typename F>
  void for_each_match(std::string_view text, F&& on_match) const {
    size_t pos = 0, begin = 0, end = 0;
    while (pos < text.size() && next_match(text, pos, &begin, &end)) {
      on_match(begin, end);
      pos = end;
    }
  }

 private:
  struct Deleter {
    void operator()(pcre2_real_code_8* code) const;
  };
  // Finds the first match at or after `pos`; an empty match advances by one character.
  bool next_match(std::string_view text, size_t& pos, size_t* begin, size_t* end) const;

  std::shared_ptr<pcre2_real_code_8> code_;
};

}  // namespace mistral::tokenizer_internal
