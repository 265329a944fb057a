// libFuzzer target: load_sentencepiece_tokenizer (a SentencePiece ModelProto, named
// tokenizer.model.v3) on arbitrary bytes, then encode and decode a few texts with what it accepts
// (tokenizer_fuzz.h). Our own bounds check (parse_model_proto) and fast BPE encoder are
// instrumented; Debian's libsentencepiece is not, so ASan sees only what reaches our code.
// Seeds: small cuts of mistral-common's .model files and tiny trained models
// (fuzz/make_tokenizer_seeds.py).
#include "tokenizer_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return mistral_fuzz::run_one("sentencepiece", "tokenizer.model.v3",
                               mistral::load_sentencepiece_tokenizer, data, size);
}
