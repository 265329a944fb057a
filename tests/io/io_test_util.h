// Helpers shared by the io/ tests: a private temporary directory, raw safetensors bytes built by
// hand (so that every malformed variant can be expressed), and a matcher for error messages.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "temp_dir.h"

namespace mistral::testing {

inline std::string le64(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out;
}

// A whole file: the 8-byte length of `header`, `header` as given, then `data_len` data bytes.
inline std::string st_bytes(std::string_view header, size_t data_len = 0) {
  std::string out = le64(header.size()) + std::string(header);
  for (size_t i = 0; i < data_len; ++i) out.push_back(static_cast<char>(i * 7 + 1));
  return out;
}

inline void write_file(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Sorted names of the entries of `dir`.
inline std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Passes when `status` failed and its message contains every one of `words`.
inline ::testing::AssertionResult FailsWith(const Status& status,
                                            std::initializer_list<std::string_view> words) {
  if (status.ok()) return ::testing::AssertionFailure() << "expected an error, got ok";
  for (std::string_view w : words) {
    if (status.message().find(w) == std::string::npos) {
      return ::testing::AssertionFailure() << "message lacks \"" << w << "\": " << status.message();
    }
  }
  return ::testing::AssertionSuccess() << status.message();
}

}  // namespace mistral::testing
