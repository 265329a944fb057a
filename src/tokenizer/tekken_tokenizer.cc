// Mistral's tekken.json (Mistral-NeMo and newer): tiktoken-style byte-level BPE. Text is split by
// the file's regex (tokenizer_internal::Regex: PCRE2), each piece becomes tokens by rank-ordered
// byte-pair merging, and ids are shifted past the special tokens, as mistral-common's Tekkenizer.
#include <algorithm>
#include <optional>
#include <unordered_map>

#include "core/utf8.h"
#include "tokenizer/byte_pair.h"
#include "tokenizer/limits.h"
#include "tokenizer/py_json.h"
#include "tokenizer/regex.h"
#include "tokenizer/tokenizer.h"

namespace mistral {
namespace {

using Json = nlohmann::json;
using tokenizer_internal::kMaxPieceBytes;
using tokenizer_internal::kMaxVocabSize;

// mistral-common's Tekkenizer.DEPRECATED_SPECIAL_TOKENS, used by files without "special_tokens".
constexpr const char* kDeprecatedSpecialTokens[] = {"<unk>",
                                                    "<s>",
                                                    "</s>",
                                                    "[INST]",
                                                    "[/INST]",
                                                    "[AVAILABLE_TOOLS]",
                                                    "[/AVAILABLE_TOOLS]",
                                                    "[TOOL_RESULTS]",
                                                    "[/TOOL_RESULTS]",
                                                    "[TOOL_CALLS]",
                                                    "[IMG]",
                                                    "<pad>",
                                                    "[IMG_BREAK]",
                                                    "[IMG_END]",
                                                    "[PREFIX]",
                                                    "[MIDDLE]",
                                                    "[SUFFIX]",
                                                    "[SYSTEM_PROMPT]",
                                                    "[/SYSTEM_PROMPT]",
                                                    "[TOOL_CONTENT]"};

// Decodes standard base64 (with padding); nullopt on any invalid character.
std::optional<std::string> base64_decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (const char c : in) {
    const int v = value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

class TekkenTokenizer final : public Tokenizer {
 public:
  Status init(const std::string& file, const Json& j);

  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool add_eos) const override;
  Result<std::string> decode(std::span<const int32_t> ids) const override;
  std::string id_to_piece(int32_t id) const override {
    if (id < 0 || id >= vocab_size_) return "";
    if (id < num_special_) return special_[id];
    return utf8::replace_invalid(bytes_[id - num_special_]);
  }
  int32_t vocab_size() const override { return vocab_size_; }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  bool is_control(int32_t id) const override { return id >= 0 && id < num_special_; }
  std::optional<int32_t> control_token_id(std::string_view piece) const override {
    auto it = special_ids_.find(std::string(piece));
    if (it == special_ids_.end()) return std::nullopt;
    return it->second;
  }
  const std::string& kind() const override { return kind_; }
  InstructVersion instruct_version() const override { return version_; }

 private:
  int32_t rank(std::string_view bytes) const {
    auto it = ranks_.find(bytes);
    return it == ranks_.end() ? -1 : it->second;
  }

  std::string kind_;
  InstructVersion version_ = InstructVersion::kNone;
  int32_t vocab_size_ = 0, num_special_ = 0, bos_ = -1, eos_ = -1;
  std::vector<std::string> special_;                      // by id
  std::unordered_map<std::string, int32_t> special_ids_;  // text -> id
  std::vector<std::string> bytes_;                        // by rank (id - num_special_)
  std::unordered_map<std::string_view, int32_t> ranks_;   // views into bytes_
  std::optional<tokenizer_internal::Regex> regex_;
};

Status TekkenTokenizer::init(const std::string& file, const Json& j) {
  kind_ = "tekken (" + file + ")";
  if (!j.is_object()) return error("expected a JSON object");
  auto config = j.find("config");
  if (config == j.end() || !config->is_object()) return error("config: missing");
  auto get_int = [&](const char* key) -> Result<int64_t> {
    auto it = config->find(key);
    if (it == config->end() || !it->is_number_integer()) {
      return error(std::string("config.") + key + ": expected an integer");
    }
    return it->get<int64_t>();
  };
  MISTRAL_ASSIGN_OR_RETURN(const int64_t vocab_size, get_int("default_vocab_size"));
  MISTRAL_ASSIGN_OR_RETURN(const int64_t num_special, get_int("default_num_special_tokens"));
  if (vocab_size <= 0 || static_cast<size_t>(vocab_size) > kMaxVocabSize) {
    return error("config.default_vocab_size: " + std::to_string(vocab_size) + " outside [1, " +
                 std::to_string(kMaxVocabSize) + "]");
  }
  if (num_special < 3 || num_special >= vocab_size - 256) {
    return error("config.default_num_special_tokens: " + std::to_string(num_special) +
                 " must leave room for 256 byte tokens");
  }
  vocab_size_ = static_cast<int32_t>(vocab_size);
  num_special_ = static_cast<int32_t>(num_special);

  auto version = config->find("version");
  if (version == config->end() || !version->is_string()) return error("config.version: missing");
  const std::string v = version->get<std::string>();
  const std::pair<const char*, InstructVersion> kVersions[] = {
      {"v1", InstructVersion::kV1}, {"v2", InstructVersion::kV2},   {"v3", InstructVersion::kV3},
      {"v7", InstructVersion::kV7}, {"v11", InstructVersion::kV11}, {"v13", InstructVersion::kV13}};
  bool known = v == "v15";  // loads, but its chat format (model settings) is not implemented
  for (const auto& [name, iv] : kVersions) {
    if (v == name) {
      version_ = iv;
      known = true;
    }
  }
  if (!known) return error("config.version: unknown version '" + v + "'");

  // Special tokens: the file's list, or the deprecated defaults (<= v7), padded with fillers.
  auto specials = j.find("special_tokens");
  if (specials != j.end() && !specials->is_null()) {
    if (!specials->is_array()) return error("special_tokens: expected a list");
    for (size_t i = 0; i < specials->size(); ++i) {
      const Json& s = (*specials)[i];
      const std::string where = "special_tokens[" + std::to_string(i) + "]";
      if (!s.is_object() || !s.contains("rank") || !s["rank"].is_number_integer() ||
          !s.contains("token_str") || !s["token_str"].is_string()) {
        return error(where + ": expected {rank, token_str, is_control}");
      }
      if (s["rank"].get<int64_t>() != static_cast<int64_t>(i)) {
        return error(where + ".rank: expected " + std::to_string(i));
      }
      special_.push_back(s["token_str"].get<std::string>());
    }
  } else {
    if (version_ == InstructVersion::kNone || static_cast<int>(version_) > 7) {
      return error("special_tokens: required for tokenizer version " + v);
    }
    special_.assign(std::begin(kDeprecatedSpecialTokens), std::end(kDeprecatedSpecialTokens));
  }
  if (special_.size() > static_cast<size_t>(num_special_)) {
    return error("special_tokens: " + std::to_string(special_.size()) +
                 " given but config.default_num_special_tokens is " + std::to_string(num_special_));
  }
  for (size_t i = special_.size(); i < static_cast<size_t>(num_special_); ++i) {
    special_.push_back("<SPECIAL_" + std::to_string(i) + ">");
  }
  for (size_t i = 0; i < special_.size(); ++i) {
    if (special_[i].size() > kMaxPieceBytes) return error("special_tokens: token too long");
    if (!special_ids_.emplace(special_[i], static_cast<int32_t>(i)).second) {
      return error("special_tokens: duplicate token '" + special_[i] + "'");
    }
  }
  auto find_special = [&](const char* s) {
    auto it = special_ids_.find(s);
    return it == special_ids_.end() ? -1 : it->second;
  };
  bos_ = find_special("<s>");
  eos_ = find_special("</s>");
  // mistral-common requires both; without them encode could not honour add_bos/add_eos.
  if (bos_ < 0) return error("special_tokens: no \"<s>\" (BOS) token");
  if (eos_ < 0) return error("special_tokens: no \"</s>\" (EOS) token");

  // The byte-level vocabulary, cut to the ranks the configured vocab size leaves.
  auto vocab = j.find("vocab");
  if (vocab == j.end() || !vocab->is_array()) return error("vocab: expected a list");
  const size_t inner = static_cast<size_t>(vocab_size_ - num_special_);
  if (vocab->size() < inner) {
    return error("vocab: " + std::to_string(vocab->size()) + " entries, fewer than the " +
                 std::to_string(inner) + " that default_vocab_size - num_special_tokens needs");
  }
  bytes_.resize(inner);
  for (size_t i = 0; i < inner; ++i) {
    const Json& t = (*vocab)[i];
    const std::string where = "vocab[" + std::to_string(i) + "]";
    if (!t.is_object() || !t.contains("rank") || !t["rank"].is_number_integer() ||
        !t.contains("token_bytes") || !t["token_bytes"].is_string()) {
      return error(where + ": expected {rank, token_bytes, token_str}");
    }
    if (t["rank"].get<int64_t>() != static_cast<int64_t>(i)) {
      return error(where + ".rank: expected " + std::to_string(i));
    }
    const auto& b64 = t["token_bytes"].get_ref<const std::string&>();
    if (b64.size() > kMaxPieceBytes * 4 / 3 + 4) {
      return error(where + ".token_bytes: longer than " + std::to_string(kMaxPieceBytes) +
                   " bytes");
    }
    auto bytes = base64_decode(b64);
    if (!bytes || bytes->empty()) return error(where + ".token_bytes: invalid base64");
    if (i < 256 && (bytes->size() != 1 || static_cast<uint8_t>((*bytes)[0]) != i)) {
      return error(where + ": the first 256 ranks must be the single bytes 0..255");
    }
    bytes_[i] = std::move(*bytes);
  }
  ranks_.reserve(inner);
  for (size_t i = 0; i < inner; ++i) {
    if (!ranks_.emplace(bytes_[i], static_cast<int32_t>(i)).second) {
      return error("vocab[" + std::to_string(i) + "]: duplicate token bytes");
    }
  }

  auto pattern = config->find("pattern");
  if (pattern == config->end() || !pattern->is_string()) return error("config.pattern: missing");
  auto regex = tokenizer_internal::Regex::compile(pattern->get<std::string>());
  if (!regex.ok()) return regex.status().with_context("config.pattern");
  regex_ = std::move(regex).value();
  return Status();
}

std::vector<int32_t> TekkenTokenizer::encode(std::string_view text, bool add_bos,
                                             bool add_eos) const {
  std::string clean;
  text = utf8::valid_or_replaced(text, clean);
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos) out.push_back(bos_);
  const auto lookup = [this](std::string_view b) { return rank(b); };
  // Like tiktoken, text no alternative matches would be skipped (none for Mistral's patterns).
  regex_->for_each_match(text, [&](size_t begin, size_t end) {
    const std::string_view piece = text.substr(begin, end - begin);
    const size_t first = out.size();
    if (const int32_t r = rank(piece); r >= 0) {
      out.push_back(r);
    } else {
      tokenizer_internal::byte_pair_encode(piece, lookup, out);
    }
    for (size_t k = first; k < out.size(); ++k) out[k] += num_special_;
  });
  if (add_eos) out.push_back(eos_);
  return out;
}

Result<std::string> TekkenTokenizer::decode(std::span<const int32_t> ids) const {
  std::string out, run;
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab_size_) {
      return error("token id " + std::to_string(id) + " out of range [0, " +
                   std::to_string(vocab_size_) + ")");
    }
    if (id < num_special_) {
      // Special tokens are skipped, but they end a byte run: mistral-common decodes each run of
      // ordinary tokens on its own.
      out += utf8::replace_invalid(run);
      run.clear();
      continue;
    }
    run += bytes_[id - num_special_];
  }
  out += utf8::replace_invalid(run);
  return out;
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> load_tekken_tokenizer(const std::string& file) {
  MISTRAL_ASSIGN_OR_RETURN(std::string data,
                           read_file(file, tokenizer_internal::kMaxTokenizerFileBytes));
  Json j = Json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return error(file + ": not valid JSON (truncated or corrupt?)");
  data.clear();
  auto tok = std::make_unique<TekkenTokenizer>();
  // A field of the wrong type deep in the file surfaces as a JSON exception: a clear error too.
  try {
    MISTRAL_RETURN_IF_ERROR(tok->init(file, j).with_context(file));
  } catch (const nlohmann::json::exception& e) {
    return error(file + ": a field has the wrong type (" + e.what() + ")");
  }
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

}  // namespace mistral
