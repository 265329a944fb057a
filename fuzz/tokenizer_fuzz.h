// Shared body of the tokenizer-loader fuzz targets (fuzz_tokenizer_tekken, fuzz_tokenizer_hf_json,
// fuzz_tokenizer_sentencepiece). The loaders take a path, so each input is written to one file per
// process, /tmp/mistral-fuzz-<target>-<pid>/<file name> (a directory of its own, so that
// load_hf_tokenizer never picks up a stray tokenizer_config.json next to it). A file the loader
// refuses must give an error naming the file; a file it accepts must encode a few short texts to
// ids in [0, vocab_size()) that decode() accepts and turns into valid UTF-8. A violated invariant
// traps, so that libFuzzer reports it as a crash.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace mistral_fuzz {

inline void require(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz invariant violated: %s\n", what);
    __builtin_trap();
  }
}

// True if `s` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
inline bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<uint8_t>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto b = static_cast<uint8_t>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = cp << 6 | (b & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

// The per-process input file; its directory is removed at exit.
inline const std::string& input_path(const char* target, const char* file_name) {
  static const std::string path = [&] {
    const std::filesystem::path dir =
        std::filesystem::temp_directory_path() /
        ("mistral-fuzz-" + std::string(target) + "-" + std::to_string(static_cast<long>(getpid())));
    std::filesystem::create_directories(dir);
    static std::filesystem::path to_remove = dir;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(to_remove, ec);
    });
    return (dir / file_name).string();
  }();
  return path;
}

inline void write_input(const std::string& path, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  require(f != nullptr, "cannot open the temp input file");
  require(size == 0 || std::fwrite(data, 1, size, f) == size, "cannot write the temp input file");
  require(std::fclose(f) == 0, "cannot close the temp input file");
}

// Texts every accepted tokenizer encodes: ASCII, whitespace, CJK, emoji, invalid UTF-8 (replaced
// with U+FFFD by encode), control-token look-alikes, accents, a whitespace run > 128 bytes.
inline constexpr std::string_view kTexts[] = {
    "",
    "Hello, world! It's 2024-07-18: 12345 apples.",
    "  leading spaces,\ttabs\nand\r\nnewlines  ",
    "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE6\x96\x87\xE7\xAB\xA0\xE3\x80\x82"
    "\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4 \xE4\xB8\xAD\xE6\x96\x87",  // CJK, Hangul
    "\xF0\x9F\x91\x8B\xF0\x9F\x8F\xBD \xF0\x9F\xA7\x91\xE2\x80\x8D\xF0\x9F\x92\xBB "
    "\xF0\x9F\x87\xAB\xF0\x9F\x87\xB7",                                     // emoji, ZWJ, flag
    "bad \xFF\xFE utf8 \xC3( \xE2\x82 \xF0\x9F\x98 \xED\xA0\x80 \xC0\xAF",  // invalid UTF-8
    "[INST] hi [/INST]</s><s>[TOOL_CALLS]<unk><0x0A>\xE2\x96\x81",
    "\xEF\xBB\xBF"
    "caf\xC3\xA9 na\xC3\xAFve \xC3\x85ngstr\xC3\xB6m \xE2\x82\xAC\xC2\xA0\xE2\x80\xAF!",
    "                                                                                "
    "                                                                                "
    "   x",  // a whitespace run longer than 128 bytes
};

inline void check_tokenizer(const mistral::Tokenizer& tok) {
  const int32_t n = tok.vocab_size();
  require(n > 0, "vocab_size() > 0");
  for (const std::string_view text : kTexts) {
    for (const bool special : {false, true}) {
      const std::vector<int32_t> ids = tok.encode(text, special, special);
      for (const int32_t id : ids) require(id >= 0 && id < n, "encode: id in [0, vocab_size())");
      auto decoded = tok.decode(ids);
      require(decoded.ok(), "decode accepts the ids encode produced");
      require(valid_utf8(*decoded), "decode returns valid UTF-8");
      for (const int32_t id : ids) {
        volatile size_t sink = tok.id_to_piece(id).size();
        (void)sink;
        (void)tok.is_control(id);
      }
    }
  }
  for (const int32_t bad : {-1, n}) {
    const int32_t ids[] = {bad};
    require(!tok.decode(ids).ok(), "decode refuses ids outside [0, vocab_size())");
    require(tok.id_to_piece(bad).empty(), "id_to_piece is empty outside [0, vocab_size())");
    require(!tok.is_control(bad), "is_control is false outside [0, vocab_size())");
  }
  for (const char* piece : {"[INST]", "</s>", "<s>", "<unk>", ""}) {
    if (const auto id = tok.control_token_id(piece)) {
      require(*id >= 0 && *id < n, "control_token_id in [0, vocab_size())");
    }
  }
  require(tok.bos_id() < n && tok.eos_id() < n, "bos/eos < vocab_size()");
  volatile size_t sink = tok.kind().size();
  (void)sink;
  (void)mistral::instruct_version_name(tok.instruct_version());
}

// Writes the input to the per-process file, loads it with `load` and checks what it accepts with
// check_tokenizer and `extra_check`.
template <typename Loader, typename Check = void (*)(const mistral::Tokenizer&)>
int run_one(
    const char* target, const char* file_name, Loader load, const uint8_t* data, size_t size,
    Check extra_check = [](const mistral::Tokenizer&) {}) {
  const std::string& path = input_path(target, file_name);
  write_input(path, data, size);
  auto tok = load(path);
  if (!tok.ok()) {
    require(tok.status().message().rfind(path + ": ", 0) == 0, "a load error names the file");
    return 0;
  }
  require(*tok != nullptr, "a loaded tokenizer is not null");
  check_tokenizer(**tok);
  extra_check(**tok);
  return 0;
}

}  // namespace mistral_fuzz
