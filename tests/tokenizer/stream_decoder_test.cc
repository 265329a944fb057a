// StreamDecoder: pieces are whole UTF-8 characters and concatenate to the full decode, for
// byte-level (tekken), byte-fallback (SentencePiece, tokenizer.json) and control tokens.
#include "tokenizer/stream_decoder.h"

#include <gtest/gtest.h>

#include <random>

#include "tiny_tokenizers.h"
#include "core/utf8.h"

namespace mistral {
namespace {

std::unique_ptr<Tokenizer> load(const std::string& name, const std::string& bytes) {
  auto dir = testing::make_temp_dir("stream");
  testing::write_file(dir / name, bytes);
  auto tok = load_tokenizer((dir / name).string());
  EXPECT_TRUE(tok.ok()) << tok.status().message();
  return std::move(tok).value();
}

void check_stream(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  StreamDecoder stream(tok);
  std::string all;
  for (int32_t id : ids) {
    auto piece = stream.push(id);
    ASSERT_TRUE(piece.ok()) << piece.status().message();
    EXPECT_EQ(utf8::valid_prefix_length(*piece), piece->size()) << "half a character emitted";
    all += *piece;
  }
  all += stream.finish();
  EXPECT_EQ(all, *tok.decode(ids));
}

TEST(StreamDecoder, NeverSplitsCharactersAndMatchesFullDecode) {
  const std::string text =
      "héllo wörld 😀 日本語 ab ab\n\t[INST] 👨‍👩‍👧 e\u0301";
  for (const auto& [name, bytes] :
       {std::pair{"tekken.json", testing::tekken_json()},
        std::pair{"tokenizer.model.v2", testing::sentencepiece_model_bytes()},
        std::pair{"tokenizer.json", testing::hf_tokenizer_json()}}) {
    SCOPED_TRACE(name);
    auto tok = load(name, bytes);
    check_stream(*tok, tok->encode(text, true, true));
    // Long outputs exercise the window cut-back.
    std::string long_text;
    for (int i = 0; i < 50; ++i) long_text += text;
    check_stream(*tok, tok->encode(long_text, true, false));
  }
}

TEST(StreamDecoder, RandomIdsIncludingBrokenBytesAndControls) {
  std::mt19937 rng(42);
  for (const auto& [name, bytes] :
       {std::pair{"tekken.json", testing::tekken_json()},
        std::pair{"tokenizer.model.v2", testing::sentencepiece_model_bytes()},
        std::pair{"tokenizer.json", testing::hf_tokenizer_json()}}) {
    SCOPED_TRACE(name);
    auto tok = load(name, bytes);
    std::uniform_int_distribution<int32_t> any(0, tok->vocab_size() - 1);
    for (int round = 0; round < 200; ++round) {
      std::vector<int32_t> ids(1 + rng() % 70);
      for (auto& id : ids) id = any(rng);
      check_stream(*tok, ids);
    }
  }
}

TEST(StreamDecoder, HoldsBackIncompleteCharacterAndRejectsBadIds) {
  auto tok = load("tekken.json", testing::tekken_json());
  StreamDecoder stream(*tok);
  const auto euro = tok->encode("€", false, false);  // three byte tokens
  ASSERT_EQ(euro.size(), 3u);
  EXPECT_EQ(*stream.push(euro[0]), "");
  EXPECT_EQ(*stream.push(euro[1]), "");
  EXPECT_EQ(*stream.push(euro[2]), "€");
  EXPECT_FALSE(stream.push(tok->vocab_size()).ok());
  EXPECT_FALSE(stream.push(-1).ok());
  EXPECT_EQ(*stream.push(euro[0]), "");
  EXPECT_EQ(stream.finish(), "\xEF\xBF\xBD");  // an unfinished character ends as U+FFFD
  EXPECT_EQ(stream.finish(), "");
}

}  // namespace
}  // namespace mistral
