// Every input the tokenizer fuzz targets once crashed, hung or misbehaved on (fuzz/crashers/,
// named <target>-<what>) now loads to a clear error that names the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "temp_dir.h"
#include "tokenizer/tokenizer.h"

namespace mistral {
namespace {

namespace fs = std::filesystem;

TEST(FuzzCrashers, EveryCrasherIsRefusedWithAClearError) {
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(MISTRAL_FUZZ_CRASHERS_DIR)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with("fuzz_tokenizer_")) continue;
    SCOPED_TRACE(name);
    // A private folder per input: the tokenizer.json loader also reads a neighbouring
    // tokenizer_config.json.
    testing::TempDir dir;
    const std::string file = dir.file(name);
    fs::copy_file(entry.path(), file);
    Result<std::unique_ptr<Tokenizer>> tok = error("unknown fuzz target");
    if (name.starts_with("fuzz_tokenizer_hf_json-")) tok = load_hf_tokenizer(file);
    if (name.starts_with("fuzz_tokenizer_tekken-")) tok = load_tekken_tokenizer(file);
    if (name.starts_with("fuzz_tokenizer_sentencepiece-")) tok = load_sentencepiece_tokenizer(file);
    ASSERT_FALSE(tok.ok());
    EXPECT_NE(tok.status().message().find(file), std::string::npos) << tok.status().message();
    ++checked;
  }
  EXPECT_GE(checked, 7);
}

}  // namespace
}  // namespace mistral
