// Small, self-contained tokenizer files written by the unit tests (no Python, no downloads):
// a SentencePiece model protobuf built by hand, a byte-level tekken.json and a BPE
// tokenizer.json, each with a few merges and the Mistral control tokens.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace mistral::testing {

// A fresh empty directory under the system temp dir, unique per call.
std::filesystem::path make_temp_dir(const std::string& tag);
void write_file(const std::filesystem::path& path, const std::string& bytes);

// SentencePiece ModelProto (unigram, byte fallback): <unk> <s> </s> [INST] [/INST] <0x00>..<0xFF>
// then "▁", "a", "b", "▁a", "ab", "▁ab". `extra_piece` (if non-empty) is appended as one more
// piece, to make a hostile file.
std::string sentencepiece_model_bytes(const std::string& extra_piece = "");

// tekken.json: 256 byte tokens + "ab", " a", "▁"; mistral-common's 20 deprecated special tokens
// padded to `num_special`; config.version "v3".
std::string tekken_json(int num_special = 24);

// tokenizer.json (BPE, byte fallback, legacy Prepend/Replace normalizer) with the given merges
// (JSON list text) and the control tokens <unk> <s> </s> [INST] [/INST] as special tokens.
std::string hf_tokenizer_json(const std::string& merges_json = R"(["a b", "▁ a"])");

}  // namespace mistral::testing
