// The Tokenizer interface: text <-> token ids for one tokenizer file, knowing nothing of the model.
// Implementations are immutable after loading, so one instance may be shared by any number of
// threads. Ids are int32 (every Mistral vocabulary fits); text is UTF-8 in and out.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace mistral {

// The Mistral instruct (chat) format a tokenizer file belongs to, as mistral-common names it
// (TokenizerVersion). kNone: a file without a declared Mistral version (e.g. tokenizer.json).
enum class InstructVersion { kNone = 0, kV1 = 1, kV2 = 2, kV3 = 3, kV7 = 7, kV11 = 11, kV13 = 13 };

const char* instruct_version_name(InstructVersion version);

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Encodes user text. Control tokens ("[INST]", "</s>", ...) are never produced from the text:
  // a user typing "[INST]" gets the tokens of that text. Invalid UTF-8 is first replaced with
  // U+FFFD the way Python's bytes.decode("utf-8", "replace") does.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos, bool add_eos) const = 0;

  // Decodes ids to text, skipping control tokens (mistral-common's SpecialTokenPolicy.IGNORE).
  // Ids outside [0, vocab_size()) are an error.
  virtual Result<std::string> decode(std::span<const int32_t> ids) const = 0;

  // The vocabulary entry of an id (e.g. "▁Hello", "<0x0A>", "[INST]"); "" when out of range.
  virtual std::string id_to_piece(int32_t id) const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  // True for control (special) tokens: they only come from the chat encoder or the model.
  virtual bool is_control(int32_t id) const = 0;
  // The id of a control token by its text, e.g. "[INST]"; nullopt if the vocabulary lacks it.
  virtual std::optional<int32_t> control_token_id(std::string_view piece) const = 0;

  // Which implementation and file were chosen, e.g. "sentencepiece (dir/tokenizer.model.v3)".
  virtual const std::string& kind() const = 0;
  // The chat format declared by the file (name suffix for .model, config.version for tekken).
  virtual InstructVersion instruct_version() const = 0;
};

// Chooses and loads the tokenizer a checkpoint directory ships, in mistral-common's order
// (mistral_common.tokens.tokenizers.utils.get_one_valid_tokenizer_file, used by from_hf_hub):
//   1. "tekken.json";
//   2. SentencePiece "*.model" / "*.model.v<N>[m1]": the last in sorted name order, so
//      "tokenizer.model.v3" wins over "tokenizer.model" (v0.3 repos ship both);
//   3. any other "*tekken*.json" (mistral-common's is_tekken);
//   4. Hugging Face "tokenizer.json" (+ tokenizer_config.json), for checkpoints without Mistral's
//      own files. mistral-inference instead refuses a directory with several tokenizer files.
// `path` may also name one file. kind() says which file was chosen.
Result<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& path);

// Loaders for one file each (the format is not guessed from the content).
Result<std::unique_ptr<Tokenizer>> load_sentencepiece_tokenizer(const std::string& file);
Result<std::unique_ptr<Tokenizer>> load_tekken_tokenizer(const std::string& file);
Result<std::unique_ptr<Tokenizer>> load_hf_tokenizer(const std::string& file);

}  // namespace mistral
