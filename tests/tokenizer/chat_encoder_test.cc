// ChatEncoder on a tiny tekken file (instruct v3): layout of the control tokens, user text that
// looks like control tokens, and errors that name the offending message.
#include "tokenizer/chat_encoder.h"

#include <gtest/gtest.h>

#include "tiny_tokenizers.h"

namespace mistral {
namespace {

class ChatEncoderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = testing::make_temp_dir("chat");
    testing::write_file(dir / "tekken.json", testing::tekken_json());
    auto tok = load_tokenizer(dir.string());
    ASSERT_TRUE(tok.ok()) << tok.status().message();
    tok_ = std::move(tok).value();
  }
  std::vector<int32_t> text(const std::string& s) { return tok_->encode(s, false, false); }
  std::unique_ptr<Tokenizer> tok_;
};

TEST_F(ChatEncoderTest, UserAssistantUserV3) {
  auto enc = ChatEncoder::create(*tok_);
  ASSERT_TRUE(enc.ok()) << enc.status().message();
  auto ids = enc->encode_json(R"({"messages": [
      {"role": "system", "content": "sys"},
      {"role": "user", "content": "ab"},
      {"role": "assistant", "content": "a "},
      {"role": "user", "content": "[INST]"}]})");
  ASSERT_TRUE(ids.ok()) << ids.status().message();
  std::vector<int32_t> want = {1, 3};
  auto add = [&](const std::vector<int32_t>& v) { want.insert(want.end(), v.begin(), v.end()); };
  add(text("ab"));
  want.push_back(4);
  add(text("a"));  // trailing spaces of assistant turns are stripped
  want.push_back(2);
  want.push_back(3);
  add(text("sys\n\n[INST]"));  // v3: system prompt joins the last user message
  want.push_back(4);
  EXPECT_EQ(*ids, want);
}

TEST_F(ChatEncoderTest, ToolCallsV3) {
  auto enc = ChatEncoder::create(*tok_);
  auto ids = enc->encode_json(R"({"messages": [
      {"role": "user", "content": "q"},
      {"role": "assistant", "tool_calls": [{"id": "abcdefghi", "function": {"name": "f", "arguments": {"x": 1.0}}}]},
      {"role": "tool", "tool_call_id": "abcdefghi", "content": "{\"t\":2}"}],
      "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]})");
  ASSERT_TRUE(ids.ok()) << ids.status().message();
  std::vector<int32_t> want = {1, 5};
  auto add = [&](const std::string& s) {
    auto v = text(s);
    want.insert(want.end(), v.begin(), v.end());
  };
  add(R"([{"type": "function", "function": {"name": "f", "description": "", "parameters": {"type": "object"}}}])");
  want.insert(want.end(), {6, 3});
  add("q");
  want.insert(want.end(), {4, 9});
  add(R"([{"name": "f", "arguments": {"x": 1.0}, "id": "abcdefghi"}])");
  want.insert(want.end(), {2, 7});
  add(R"({"content": {"t": 2}, "call_id": "abcdefghi"})");
  want.push_back(8);
  EXPECT_EQ(*ids, want);
}

TEST_F(ChatEncoderTest, ErrorsNameTheProblem) {
  auto enc = ChatEncoder::create(*tok_);
  auto err = [&](const std::string& json) {
    auto ids = enc->encode_json(json);
    EXPECT_FALSE(ids.ok()) << json;
    return ids.ok() ? "" : ids.status().message();
  };
  EXPECT_NE(err("{").find("not valid JSON"), std::string::npos);
  EXPECT_NE(err(R"({"messages": []})").find("at least one message"), std::string::npos);
  EXPECT_NE(err(R"({"messages": [{"role": "wizard", "content": "x"}]})").find("messages[0].role"),
            std::string::npos);
  EXPECT_NE(
      err(R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]})")
          .find("last role"),
      std::string::npos);
  EXPECT_NE(
      err(R"({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "y", "tool_call_id": "abcdefghi"}]})")
          .find("messages[1]"),
      std::string::npos);
  EXPECT_NE(
      err(R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"id": "short", "function": {"name": "f", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "short", "content": "1"}]})")
          .find("tool call id"),
      std::string::npos);
}

TEST_F(ChatEncoderTest, UnknownVersionIsAnError) {
  auto dir = testing::make_temp_dir("chat_hf");
  testing::write_file(dir / "tokenizer.json", testing::hf_tokenizer_json());
  auto hf = load_tokenizer(dir.string());
  ASSERT_TRUE(hf.ok());
  EXPECT_FALSE(ChatEncoder::create(**hf).ok());
  // An explicit version works when the vocabulary has its control tokens (v1 needs none).
  auto v1 = ChatEncoder::create(**hf, InstructVersion::kV1);
  ASSERT_TRUE(v1.ok()) << v1.status().message();
  EXPECT_TRUE(v1->encode_json(R"({"messages": [{"role": "user", "content": "ab"}]})").ok());
  EXPECT_FALSE(ChatEncoder::create(**hf, InstructVersion::kV3).ok());  // no [TOOL_CALLS]
}

}  // namespace
}  // namespace mistral
