// libFuzzer target: load_sentencepiece_tokenizer (a SentencePiece ModelProto, named
// tokenizer.model.v3) on arbitrary bytes, then encode and decode a few texts with what it accepts
// (tokenizer_fuzz.h). Our own bounds check (parse_model_proto) and fast BPE encoder
// (SpmBpeEncoder) are instrumented; Debian's libsentencepiece is not, so ASan sees only what
// reaches our code. Where the fast encoder is used, its ids must equal the library's (the
// reference) for every valid UTF-8 text. Seeds: small cuts of mistral-common's .model files and
// tiny trained models (fuzz/make_tokenizer_seeds.py).
#include <sentencepiece_processor.h>

#include "tokenizer_fuzz.h"

namespace {

// The fast encoder against sentencepiece itself, on the texts check_tokenizer encodes.
void check_against_library(const mistral::Tokenizer& tok, const uint8_t* data, size_t size) {
  if (tok.kind().find("[library encoder]") != std::string::npos) return;
  sentencepiece::SentencePieceProcessor sp;
  mistral_fuzz::require(
      sp.LoadFromSerializedProto(std::string_view(reinterpret_cast<const char*>(data), size)).ok(),
      "the library loads what the loader accepted");
  for (const std::string_view text : mistral_fuzz::kTexts) {
    if (!mistral_fuzz::valid_utf8(text)) continue;
    std::vector<int> expected;
    mistral_fuzz::require(sp.Encode(text, &expected).ok(), "the library encodes");
    const std::vector<int32_t> ids = tok.encode(text, false, false);
    mistral_fuzz::require(std::equal(ids.begin(), ids.end(), expected.begin(), expected.end()),
                          "SpmBpeEncoder ids equal sentencepiece's");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return mistral_fuzz::run_one(
      "sentencepiece", "tokenizer.model.v3", mistral::load_sentencepiece_tokenizer, data, size,
      [&](const mistral::Tokenizer& tok) { check_against_library(tok, data, size); });
}
