// A fast encoder for SentencePiece BPE models of the kind Mistral ships (identity normalizer,
// byte fallback), bit-identical to libsentencepiece's bpe_model.cc Encode but on an id-pair merge
// table instead of string hashing. Also the strict protobuf reader that bounds a .model file
// before the library sees it. Immutable after creation; thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "tokenizer/pair_map.h"

namespace mistral::tokenizer_internal {

struct SpmPiece {
  std::string piece;
  float score = 0;
  int type = 1;  // 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte
};

struct SpmModelInfo {
  std::vector<SpmPiece> pieces;
  int model_type = 1;  // 1 unigram, 2 BPE, 3 word, 4 char
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  std::string normalizer_name;
  bool has_charsmap = false;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

// Parses the fields above from a serialized ModelProto, refusing malformed wire data, more than
// kMaxVocabSize pieces or a piece longer than kMaxPieceBytes.
Result<SpmModelInfo> parse_model_proto(std::string_view data);

class SpmBpeEncoder {
 public:
  // nullptr when the model needs something this encoder does not do (unigram, a normalization
  // table, whitespace collapsing, unused pieces, ...): the caller then uses libsentencepiece.
  static std::unique_ptr<SpmBpeEncoder> create(const SpmModelInfo& info);

  // Appends the ids of valid UTF-8 `text` (what SentencePieceProcessor::Encode returns).
  void encode(std::string_view text, std::vector<int32_t>& out) const;

 private:
  SpmBpeEncoder() = default;
  int32_t char_id(std::string_view ch) const;

  std::unordered_map<std::string, int32_t> pieces_;  // normal + user-defined pieces
  int32_t ascii_ids_[128];
  std::unordered_map<uint32_t, int32_t> char_ids_;  // multi-byte one-character pieces
  std::vector<std::string> user_defined_;           // matched whole in text, longest first
  PairMap<int32_t> merges_;                         // (left id, right id) -> merged id
  std::vector<float> scores_;
  int32_t byte_ids_[256];
  int32_t unk_id_ = 0;
  bool byte_fallback_ = false;
  bool add_dummy_prefix_ = true;
  uint8_t user_defined_first_bytes_[256] = {};
};

}  // namespace mistral::tokenizer_internal
