// libFuzzer target: load_hf_tokenizer (Hugging Face tokenizer.json, BPE) on arbitrary bytes, then
// encode and decode a few texts with what it accepts (tokenizer_fuzz.h). The file sits alone in
// its directory, so no tokenizer_config.json is read. Seeds: fuzz/make_tokenizer_seeds.py.
#include "tokenizer_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return mistral_fuzz::run_one("hf-json", "tokenizer.json", mistral::load_hf_tokenizer, data, size);
}
