// libFuzzer target: load_tekken_tokenizer (Mistral's tekken.json) on arbitrary bytes, then encode
// and decode a few texts with what it accepts (tokenizer_fuzz.h). Seeds: small cuts of
// mistral-common's tekken files (fuzz/make_tokenizer_seeds.py).
#include "tokenizer_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return mistral_fuzz::run_one("tekken", "tekken.json", mistral::load_tekken_tokenizer, data, size);
}
