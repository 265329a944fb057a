// Loading: every tokenizer format loads its valid tiny file, refuses broken ones with a message
// naming the file and the field, and never crashes; load_tokenizer picks files in Mistral's order.
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "temp_dir.h"
#include "tiny_tokenizers.h"
#include "tokenizer/tokenizer.h"

namespace mistral {
namespace {

using testing::make_temp_dir;
using testing::write_file;

std::string load_error(const std::filesystem::path& path) {
  auto result = load_tokenizer(path.string());
  EXPECT_FALSE(result.ok()) << path;
  return result.ok() ? "" : result.status().message();
}

TEST(SentencePieceFile, TinyModelLoads) {
  auto dir = make_temp_dir("spm");
  write_file(dir / "tokenizer.model.v2", testing::sentencepiece_model_bytes());
  auto tok = load_tokenizer(dir.string());
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  EXPECT_EQ((*tok)->instruct_version(), InstructVersion::kV2);
  EXPECT_EQ((*tok)->bos_id(), 1);
  EXPECT_EQ((*tok)->control_token_id("[INST]"), 3);
  EXPECT_TRUE((*tok)->is_control(3));
  EXPECT_FALSE((*tok)->is_control(0));  // <unk> is "unknown", not control
  const auto ids = (*tok)->encode("ab [INST]", true, true);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  for (size_t i = 1; i + 1 < ids.size(); ++i) EXPECT_FALSE((*tok)->is_control(ids[i]));
  EXPECT_EQ(*(*tok)->decode(ids), "ab [INST]");
}

TEST(SentencePieceFile, BrokenFilesGiveErrors) {
  auto dir = make_temp_dir("spm_bad");
  const std::string good = testing::sentencepiece_model_bytes();
  write_file(dir / "truncated.model", good.substr(0, good.size() / 2 + 3));
  EXPECT_NE(load_error(dir / "truncated.model").find("truncated.model"), std::string::npos);
  write_file(dir / "garbage.model", std::string(1000, '\xFF'));
  EXPECT_NE(load_error(dir / "garbage.model").find("garbage.model"), std::string::npos);
  write_file(dir / "empty.model", "");
  EXPECT_NE(load_error(dir / "empty.model").find("empty"), std::string::npos);
  write_file(dir / "huge_piece.model",
             testing::sentencepiece_model_bytes(std::string(1 << 20, 'x')));
  EXPECT_NE(load_error(dir / "huge_piece.model").find("bytes long"), std::string::npos);
  EXPECT_NE(load_error(dir / "missing.model").find("no such file"), std::string::npos);
}

TEST(SentencePieceFile, LongestAllowedPieceLoads) {
  auto dir = make_temp_dir("spm_long");
  write_file(dir / "tokenizer.model", testing::sentencepiece_model_bytes(std::string(30000, 'x')));
  auto tok = load_tokenizer(dir.string());
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  EXPECT_EQ((*tok)->encode(std::string(30000, 'x'), false, false).back(), (*tok)->vocab_size() - 1);
}

TEST(TekkenFile, TinyFileLoadsAndMerges) {
  auto dir = make_temp_dir("tekken");
  write_file(dir / "tekken.json", testing::tekken_json());
  auto tok = load_tokenizer(dir.string());
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  EXPECT_EQ((*tok)->instruct_version(), InstructVersion::kV3);
  EXPECT_EQ((*tok)->vocab_size(), 24 + 259);
  EXPECT_EQ((*tok)->control_token_id("[INST]"), 3);
  EXPECT_EQ((*tok)->control_token_id("<SPECIAL_23>"), 23);
  // "ab" is rank 256, so id 24 + 256; " a" merges; "[INST]" stays text.
  EXPECT_EQ((*tok)->encode("ab", false, false), (std::vector<int32_t>{24 + 256}));
  for (int32_t id : (*tok)->encode("[INST] </s>", false, false)) EXPECT_GE(id, 24);
  EXPECT_EQ(*(*tok)->decode((*tok)->encode("héllo 😀 [INST]", true, true)), "héllo 😀 [INST]");
}

TEST(TekkenFile, BrokenFilesGiveErrors) {
  auto dir = make_temp_dir("tekken_bad");
  const std::string good = testing::tekken_json();
  auto expect = [&](const std::string& name, const std::string& content, const std::string& what) {
    write_file(dir / name, content);
    const std::string msg = load_error(dir / name);
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  };
  auto edit = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return at == std::string::npos ? s : s.replace(at, from.size(), to);
  };
  expect("t1_tekken.json", good.substr(0, good.size() / 2), "not valid JSON");
  expect("t2_tekken.json",
         edit("\"default_vocab_size\":283", "\"default_vocab_size\":1000000000000"),
         "default_vocab_size");
  expect("t3_tekken.json", edit("\"rank\":1,", "\"rank\":7,"), "vocab[1].rank");
  expect("t4_tekken.json", edit("\"token_bytes\":\"YWI=\"", "\"token_bytes\":\"!!\""),
         "invalid base64");
  expect("t5_tekken.json", edit("\"version\":\"v3\"", "\"version\":\"v99\""), "config.version");
  expect("t6_tekken.json", edit("\"version\":\"v3\"", "\"version\":\"v13\""), "special_tokens");
  expect("t7_tekken.json", edit("\\\\s+(?!\\\\S)|", "(?<"), "config.pattern");
  expect("t8_tekken.json", edit("\"token_bytes\":\"YWI=\"", "\"token_bytes\":\"AA==\""),
         "duplicate");
  expect("t9_tekken.json",
         edit("\"token_bytes\":\"YWI=\"", "\"token_bytes\":\"" + std::string(1500000, 'A') + "\""),
         "longer than");
  expect("t10_tekken.json", "[]", "expected a JSON object");
}

TEST(HfTokenizerFile, TinyFileLoads) {
  auto dir = make_temp_dir("hf");
  write_file(dir / "tokenizer.json", testing::hf_tokenizer_json());
  auto tok = load_tokenizer(dir.string());
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  EXPECT_EQ((*tok)->instruct_version(), InstructVersion::kNone);
  const auto ids = (*tok)->encode("ab a [INST]é", false, false);
  for (int32_t id : ids) EXPECT_FALSE((*tok)->is_control(id));
  EXPECT_EQ(*(*tok)->decode(ids), "ab a [INST]é");
}

TEST(HfTokenizerFile, BrokenFilesGiveErrors) {
  auto dir = make_temp_dir("hf_bad");
  auto expect = [&](const std::string& name, const std::string& content, const std::string& what) {
    write_file(dir / name, content);
    const std::string msg = load_error(dir / name);
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  };
  const std::string good = testing::hf_tokenizer_json();
  expect("h1.json", good.substr(0, good.size() - 10), "not valid JSON");
  expect("h2.json", testing::hf_tokenizer_json(R"(["a zz"])"), "unknown token 'zz'");
  expect("h3.json", testing::hf_tokenizer_json(R"(["a"])"), "model.merges[0]");
  expect("h4.json", testing::hf_tokenizer_json(R"([["b", "a"]])"), "not in vocab");
  std::string huge = good;
  huge.replace(huge.find("\"ab\":"), 4, "\"" + std::string(2 << 20, 'q') + "\"");
  expect("h5.json", huge, "too long");
  std::string nfkc = good;
  nfkc.replace(nfkc.find("\"normalizer\":"), 13, "\"normalizer\":{\"type\":\"NFKC\"},\"x\":");
  expect("h6.json", nfkc, "unsupported type 'NFKC'");
  std::string split = good;
  split.replace(split.find("\"pre_tokenizer\":null"), 20,
                "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s\"},"
                "\"behavior\":\"Contiguous\"}");
  expect("h7.json", split, "'Contiguous' is not supported");
  std::string bad_regex = good;
  bad_regex.replace(bad_regex.find("\"pre_tokenizer\":null"), 20,
                    "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"}}");
  expect("h8.json", bad_regex, "pre_tokenizer.Split.pattern");
}

TEST(HostileText, LongRunsRoundTrip) {
  auto dir = make_temp_dir("long");
  write_file(dir / "tekken.json", testing::tekken_json());
  write_file(dir / "tokenizer.model.v2", testing::sentencepiece_model_bytes());
  write_file(dir / "tokenizer.json", testing::hf_tokenizer_json());
  for (const char* name : {"tekken.json", "tokenizer.model.v2", "tokenizer.json"}) {
    SCOPED_TRACE(name);
    auto tok = load_tokenizer((dir / name).string());
    ASSERT_TRUE(tok.ok()) << tok.status().message();
    for (const std::string& text :
         {std::string(1 << 20, ' '), std::string(1 << 20, 'a'), std::string(300000, '\n'), [] {
            std::string s;
            for (int i = 0; i < 100000; ++i) s += "\xF0\x9F\x98\x80 \t";
            return s;
          }()}) {
      const auto ids = (*tok)->encode(text, false, false);
      EXPECT_EQ(*(*tok)->decode(ids), text);
    }
  }
}

// Random truncations and byte edits of valid files: each load fails cleanly or gives a tokenizer
// that encodes and decodes without crashing (run under ASan/UBSan with MISTRAL_SANITIZE).
TEST(MutatedFiles, NeverCrash) {
  auto dir = make_temp_dir("mutated");
  std::mt19937 rng(123);
  const std::pair<const char*, std::string> files[] = {
      {"tokenizer.model.v2", testing::sentencepiece_model_bytes()},
      {"tekken.json", testing::tekken_json()},
      {"tokenizer.json", testing::hf_tokenizer_json()}};
  for (const auto& [name, good] : files) {
    SCOPED_TRACE(name);
    for (int round = 0; round < 400; ++round) {
      std::string bytes = good;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) {
        const size_t at = rng() % bytes.size();
        switch (rng() % 3) {
          case 0:
            bytes[at] = static_cast<char>(rng());
            break;
          case 1:
            bytes.erase(at, 1 + rng() % 8);
            break;
          default:
            bytes.resize(at + 1);
            break;
        }
        if (bytes.empty()) bytes = "x";
      }
      write_file(dir / name, bytes);
      auto tok = load_tokenizer((dir / name).string());
      if (!tok.ok()) {
        EXPECT_NE(tok.status().message().find(name), std::string::npos);
        continue;
      }
      const auto ids = (*tok)->encode("ab [INST] h\xC3\xA9llo \xF0\x9F\x98\x80", true, true);
      for (int32_t id : ids) EXPECT_LT(id, (*tok)->vocab_size());
      (void)(*tok)->decode(ids);
    }
  }
}

TEST(LoadTokenizer, ChoosesFilesInMistralOrder) {
  auto dir = make_temp_dir("order");
  write_file(dir / "tokenizer.json", testing::hf_tokenizer_json());
  EXPECT_NE((*load_tokenizer(dir.string()))->kind().find("tokenizer.json"), std::string::npos);
  write_file(dir / "tokenizer.model", testing::sentencepiece_model_bytes());
  EXPECT_NE((*load_tokenizer(dir.string()))->kind().find("tokenizer.model)"), std::string::npos);
  write_file(dir / "tokenizer.model.v3", testing::sentencepiece_model_bytes());
  EXPECT_NE((*load_tokenizer(dir.string()))->kind().find("tokenizer.model.v3"), std::string::npos);
  write_file(dir / "tekken.json", testing::tekken_json());
  EXPECT_NE((*load_tokenizer(dir.string()))->kind().find("tekken"), std::string::npos);
  EXPECT_NE(load_error(make_temp_dir("empty")).find("no tokenizer file"), std::string::npos);
}

}  // namespace
}  // namespace mistral

namespace mistral {
namespace {

TEST(HfTokenizerJson, TwoPiecesUnderOneIdAreRefused) {
  testing::TempDir dir;
  const std::string file = dir.file("tokenizer.json");
  std::ofstream(file) << R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": []}})";
  auto tok = load_hf_tokenizer(file);
  ASSERT_FALSE(tok.ok());
  EXPECT_NE(tok.status().message().find("id 0 is given to both"), std::string::npos)
      << tok.status().message();
}

}  // namespace
}  // namespace mistral
