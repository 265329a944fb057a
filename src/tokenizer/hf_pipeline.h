// The text pipeline around a tokenizer.json model: normalizer (Prepend, Replace), pre-tokenizers
// (Metaspace; Split by regex and ByteLevel, the layout of tekken converted to tokenizer.json) and
// decoder (Replace, ByteFallback, Fuse, Strip, Metaspace, ByteLevel), with the `tokenizers`
// crate's semantics. Immutable after init(); thread-safe.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/status.h"
#include "tokenizer/regex.h"

namespace mistral::tokenizer_internal {

class HfPipeline {
 public:
  // Reads "normalizer", "pre_tokenizer" and "decoder"; an unsupported step is an error naming it.
  Status init(const nlohmann::json& tokenizer_json);

  std::string normalize(std::string text) const;
  // `first`: the segment starts the input (Metaspace prepend_scheme "first").
  std::vector<std::string> pre_tokenize(std::string text, bool first) const;
  std::string decode(std::vector<std::string> tokens) const;

 private:
  enum class Step { kPrepend, kReplace, kByteFallback, kFuse, kStrip, kMetaspace, kByteLevel };
  struct Op {
    Step step;
    std::string a, b;         // Prepend: a; Replace: a -> b; Metaspace: a = replacement
    int start = 0, stop = 0;  // Strip
    char strip_char = ' ';
    bool prepend = true;  // Metaspace decoder: drop the replacement in the first token
  };
  enum class Scheme { kAlways, kFirst, kNever };

  struct PreOp {
    enum Kind { kMetaspace, kSplit, kByteLevel } kind = kMetaspace;
    std::string replacement;  // Metaspace
    Scheme scheme = Scheme::kAlways;
    bool split = true;
    std::shared_ptr<Regex> regex;   // Split; ByteLevel with use_regex
    bool remove_matches = false;    // Split behavior "Removed" (else "Isolated")
    bool add_prefix_space = false;  // ByteLevel
  };
  struct Piece {
    std::string text;
    bool at_start;  // begins at offset 0 of the input (Metaspace "first")
  };
  static void split_isolated(const PreOp& op, std::vector<Piece>& pieces);

  std::vector<Op> normalizers_;
  std::vector<PreOp> pre_tokenizers_;
  bool has_decoder_ = false;
  std::vector<Op> decoders_;
};

}  // namespace mistral::tokenizer_internal
