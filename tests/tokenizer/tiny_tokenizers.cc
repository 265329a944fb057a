#include "tiny_tokenizers.h"

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

namespace mistral::testing {
namespace {

void varint(uint64_t v, std::string& out) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

void length_delimited(int field, const std::string& payload, std::string& out) {
  varint(static_cast<uint64_t>(field) << 3 | 2, out);
  varint(payload.size(), out);
  out += payload;
}

// SentencePiece { piece = 1; score = 2; type = 3 } (types: 1 normal, 2 unknown, 3 control, 6 byte)
std::string piece_message(const std::string& piece, float score, int type) {
  std::string m;
  length_delimited(1, piece, m);
  m += static_cast<char>(2 << 3 | 5);
  char f[4];
  std::memcpy(f, &score, 4);
  m.append(f, 4);
  varint(3 << 3 | 0, m);
  varint(static_cast<uint64_t>(type), m);
  return m;
}

std::string base64(const std::string& in) {
  static const char* kChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t n = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int k = 3; k >= 0; --k) out += kChars[(n >> (6 * k)) & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t n = uint8_t(in[i]) << 16;
    out += kChars[(n >> 18) & 63];
    out += kChars[(n >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const uint32_t n = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += kChars[(n >> 18) & 63];
    out += kChars[(n >> 12) & 63];
    out += kChars[(n >> 6) & 63];
    out += '=';
  }
  return out;
}

}  // namespace

// Removes the directories make_temp_dir created when the test binary exits.
struct TempDirs {
  std::vector<std::filesystem::path> dirs;
  ~TempDirs() {
    std::error_code ec;
    for (const auto& d : dirs) std::filesystem::remove_all(d, ec);
  }
};

std::filesystem::path make_temp_dir(const std::string& tag) {
  static TempDirs created;
  static std::atomic<int> counter{0};
  auto dir =
      std::filesystem::temp_directory_path() /
      ("mistral_tok_" + tag + "_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  created.dirs.push_back(dir);
  return dir;
}

void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string sentencepiece_model_bytes(const std::string& extra_piece) {
  std::string model;
  auto add = [&](const std::string& piece, float score, int type) {
    length_delimited(1, piece_message(piece, score, type), model);
  };
  add("<unk>", 0, 2);
  add("<s>", 0, 3);
  add("</s>", 0, 3);
  add("[INST]", 0, 3);
  add("[/INST]", 0, 3);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    add(name, 0, 6);
  }
  add("\xE2\x96\x81", -1, 1);
  add("a", -2, 1);
  add("b", -3, 1);
  add("\xE2\x96\x81"
      "a",
      -1.5f, 1);
  add("ab", -1.2f, 1);
  add("\xE2\x96\x81"
      "ab",
      -1.1f, 1);
  if (!extra_piece.empty()) add(extra_piece, -9, 1);
  // trainer_spec (field 2): model_type = UNIGRAM (3: 1), byte_fallback (35: true)
  std::string trainer;
  varint(3 << 3 | 0, trainer);
  varint(1, trainer);
  varint(35 << 3 | 0, trainer);
  varint(1, trainer);
  length_delimited(2, trainer, model);
  // normalizer_spec (field 3): name "identity", add_dummy_prefix, remove_extra_whitespaces off
  std::string norm;
  length_delimited(1, "identity", norm);
  varint(3 << 3 | 0, norm);
  varint(1, norm);
  varint(4 << 3 | 0, norm);
  varint(0, norm);
  length_delimited(3, norm, model);
  return model;
}

std::string tekken_json(int num_special) {
  nlohmann::ordered_json j;
  j["config"] = {
      {"pattern",
       R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
      {"num_vocab_tokens", 259},
      {"default_vocab_size", 259 + num_special},
      {"default_num_special_tokens", num_special},
      {"version", "v3"}};
  nlohmann::ordered_json vocab = nlohmann::ordered_json::array();
  for (int b = 0; b < 256; ++b) {
    vocab.push_back({{"rank", b},
                     {"token_bytes", base64(std::string(1, static_cast<char>(b)))},
                     {"token_str", nullptr}});
  }
  const char* merged[] = {"ab", " a", "\xE2\x96\x81"};
  for (int i = 0; i < 3; ++i) {
    vocab.push_back(
        {{"rank", 256 + i}, {"token_bytes", base64(merged[i])}, {"token_str", merged[i]}});
  }
  j["vocab"] = vocab;
  return j.dump();
}

std::string hf_tokenizer_json(const std::string& merges_json) {
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  const char* specials[] = {"<unk>", "<s>", "</s>", "[INST]", "[/INST]"};
  int id = 0;
  for (const char* s : specials) vocab[s] = id++;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = id++;
  }
  for (const char* p : {"\xE2\x96\x81", "a", "b", "ab",
                        "\xE2\x96\x81"
                        "a"})
    vocab[p] = id++;
  nlohmann::ordered_json added = nlohmann::ordered_json::array();
  for (int i = 0; i < 5; ++i) {
    added.push_back(
        {{"id", i}, {"content", specials[i]}, {"special", true}, {"normalized", false}});
  }
  nlohmann::ordered_json j;
  j["added_tokens"] = added;
  j["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}}}};
  j["pre_tokenizer"] = nullptr;
  j["decoder"] = {
      {"type", "Sequence"},
      {"decoders",
       {{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
        {{"type", "ByteFallback"}},
        {{"type", "Fuse"}},
        {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  j["model"] = {{"type", "BPE"},    {"unk_token", "<unk>"},
                {"fuse_unk", true}, {"byte_fallback", true},
                {"vocab", vocab},   {"merges", nlohmann::ordered_json::parse(merges_json)}};
  return j.dump();
}

}  // namespace mistral::testing
