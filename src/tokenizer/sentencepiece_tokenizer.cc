// SentencePiece `.model` files (Mistral v1/v2/v3/v7) through Google's sentencepiece library, the
// reference: it decodes, and encodes models other than Mistral-style BPE. Mistral's BPE models
// are encoded by SpmBpeEncoder (same ids, ~2x faster); the differential tests hold it to the
// reference. The file is bounds-checked before the library parses it.
#include <sentencepiece_processor.h>

#include <algorithm>

#include "core/utf8.h"
#include "tokenizer/limits.h"
#include "tokenizer/sentencepiece_bpe.h"
#include "tokenizer/tokenizer.h"

namespace mistral {
namespace {

using tokenizer_internal::kMaxVocabSize;

// "tokenizer.model.v3" -> v3, "x.model.v7m1" -> v7, "tokenizer.model" -> v1 (mistral-common's
// get_spm_version). Unknown suffixes give kNone.
InstructVersion version_from_file_name(const std::string& path) {
  const std::string name = path.substr(path.find_last_of('/') + 1);
  const size_t dot = name.find_last_of('.');
  std::string suffix = dot == std::string::npos ? "" : name.substr(dot + 1);
  if (suffix == "model") return InstructVersion::kV1;
  if (const size_t m = suffix.find('m'); m != std::string::npos) suffix = suffix.substr(0, m);
  if (suffix == "v1") return InstructVersion::kV1;
  if (suffix == "v2") return InstructVersion::kV2;
  if (suffix == "v3") return InstructVersion::kV3;
  if (suffix == "v7") return InstructVersion::kV7;
  if (suffix == "v11") return InstructVersion::kV11;
  if (suffix == "v13") return InstructVersion::kV13;
  return InstructVersion::kNone;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(std::unique_ptr<sentencepiece::SentencePieceProcessor> sp,
                         std::unique_ptr<tokenizer_internal::SpmBpeEncoder> fast, std::string file)
      : sp_(std::move(sp)),
        fast_(std::move(fast)),
        kind_("sentencepiece (" + file + ")" + (fast_ ? "" : " [library encoder]")),
        version_(version_from_file_name(file)),
        vocab_size_(sp_->GetPieceSize()) {}

  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool add_eos) const override {
    std::string clean;
    text = utf8::valid_or_replaced(text, clean);
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 2);
    if (add_bos) out.push_back(bos_id());
    if (fast_) {
      fast_->encode(text, out);
    } else {
      std::vector<int> ids;
      // Encode fails only for an unloaded model; an empty result is the only sane fallback.
      if (!sp_->Encode(std::string(text), &ids).ok()) ids.clear();
      out.insert(out.end(), ids.begin(), ids.end());
    }
    if (add_eos) out.push_back(eos_id());
    return out;
  }

  Result<std::string> decode(std::span<const int32_t> ids) const override {
    std::vector<int> v(ids.begin(), ids.end());
    for (int id : v) {
      if (id < 0 || id >= vocab_size_) {
        return error("token id " + std::to_string(id) + " out of range [0, " +
                     std::to_string(vocab_size_) + ")");
      }
    }
    std::string text;
    const auto status = sp_->Decode(v, &text);
    if (!status.ok()) return error("sentencepiece decode: " + status.ToString());
    return text;
  }

  std::string id_to_piece(int32_t id) const override {
    if (id < 0 || id >= vocab_size_) return "";
    return sp_->IdToPiece(id);
  }
  int32_t vocab_size() const override { return vocab_size_; }
  int32_t bos_id() const override { return sp_->bos_id(); }
  int32_t eos_id() const override { return sp_->eos_id(); }
  bool is_control(int32_t id) const override {
    return id >= 0 && id < vocab_size_ && sp_->IsControl(id);
  }
  std::optional<int32_t> control_token_id(std::string_view piece) const override {
    const int id = sp_->PieceToId(std::string(piece));
    if (id < 0 || id >= vocab_size_ || sp_->IdToPiece(id) != piece) return std::nullopt;
    return id;
  }
  const std::string& kind() const override { return kind_; }
  InstructVersion instruct_version() const override { return version_; }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  // Encodes Mistral's BPE models exactly as sp_ would, faster; null for other models.
  std::unique_ptr<tokenizer_internal::SpmBpeEncoder> fast_;
  std::string kind_;
  InstructVersion version_;
  int32_t vocab_size_;
};

}  // namespace

Result<std::unique_ptr<Tokenizer>> load_sentencepiece_tokenizer(const std::string& file) {
  MISTRAL_ASSIGN_OR_RETURN(std::string data,
                           read_file(file, tokenizer_internal::kMaxTokenizerFileBytes));
  if (data.empty()) return error(file + ": empty SentencePiece model file");
  // Bounds first: the library trusts its input (a megabyte-long piece crashes it).
  auto info = tokenizer_internal::parse_model_proto(data);
  if (!info.ok()) return info.status().with_context(file);
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  sentencepiece::util::Status status;
  try {  // the library throws from deep inside on some malformed models
    status = sp->LoadFromSerializedProto(data);
  } catch (const std::exception& e) {
    return error(file + ": not a valid SentencePiece model: " + e.what());
  }
  if (!status.ok()) {
    return error(file +
                 ": not a valid SentencePiece model (truncated or corrupt?): " + status.ToString());
  }
  const int n = sp->GetPieceSize();
  if (n <= 0 || static_cast<size_t>(n) > kMaxVocabSize) {
    return error(file + ": vocabulary size " + std::to_string(n) + " outside [1, " +
                 std::to_string(kMaxVocabSize) + "]");
  }
  // Mistral's models always have <s> and </s>; without them add_bos/add_eos could not be honoured.
  for (const int special : {sp->bos_id(), sp->eos_id()}) {
    if (special < 0 || special >= n) {
      return error(file + ": bos/eos id " + std::to_string(special) + " is not in the vocabulary");
    }
  }
  return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(
      std::move(sp), tokenizer_internal::SpmBpeEncoder::create(*info), file));
}

}  // namespace mistral
