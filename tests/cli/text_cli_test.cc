// Text in, text out through the `mistral` tool with Mistral's own tokenizer files (shipped in the
// mistral-common package): `generate --prompt` equals `tokenize` + `generate --input`, its text
// equals `detokenize` of its tokens, and `generate --chat` and `chat` use the chat format.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "run_cli.h"
#include "temp_dir.h"

namespace mistral::testing {
namespace {

// The folder of Mistral's tokenizer files inside the installed mistral-common, or "".
std::string mistral_common_data() {
  FILE* pipe = popen(
      "python3 -c 'import mistral_common, os; "
      "print(os.path.join(os.path.dirname(mistral_common.__file__), \"data\"))' 2>/dev/null",
      "r");
  if (pipe == nullptr) return "";
  char buf[4096] = {};
  const size_t n = fread(buf, 1, sizeof(buf) - 1, pipe);
  pclose(pipe);
  std::string path(buf, n);
  while (!path.empty() && (path.back() == '\n' || path.back() == '\r')) path.pop_back();
  return std::filesystem::exists(path) ? path : "";
}

class TextCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string data = mistral_common_data();
    if (data.empty()) {
      // CI installs mistral-common; elsewhere the test is skipped rather than failed.
      if (std::getenv("CI") != nullptr) FAIL() << "mistral-common is not installed";
      GTEST_SKIP() << "mistral-common is not installed";
    }
    model_ = tmp_.file("model");
    std::ofstream(tmp_.file("config.json"))
        << R"({"model_type": "mistral", "vocab_size": 32768, "hidden_size": 64,
               "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
               "rope_theta": 1000000.0, "sliding_window": null, "bos_token_id": 1,
               "eos_token_id": 2})";
    RunResult made = run("random-checkpoint --config " + tmp_.file("config.json") + " --out " +
                         model_ + " --std 0.5 --seed 5");
    ASSERT_EQ(made.status, 0) << made.output;
    std::filesystem::copy_file(data + "/mistral_instruct_tokenizer_240323.model.v3",
                               model_ + "/tokenizer.model.v3");
  }

  nlohmann::json run_json(const std::string& args) {
    RunResult r = run(args, /*with_stderr=*/false);
    EXPECT_EQ(r.status, 0) << args;
    nlohmann::json j = nlohmann::json::parse(r.output, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.output;
    return j;
  }

  TempDir tmp_;
  std::string model_;
};

TEST_F(TextCliTest, PromptEqualsTokenizeThenGenerate) {
  const std::string text = "Hello, how are you? [INST] naïve 日本";
  nlohmann::json ids = run_json("tokenize --model " + model_ + " '" + text + "'");
  ASSERT_TRUE(ids.is_array());
  EXPECT_EQ(ids[0], 1);  // BOS
  std::ofstream(tmp_.file("in.json")) << nlohmann::json{{"input_ids", {ids}}}.dump();

  nlohmann::json by_text = run_json("generate --model " + model_ + " --prompt '" + text +
                                    "' --max-new-tokens 12 --greedy --ignore-eos --json");
  nlohmann::json by_ids = run_json("generate --model " + model_ + " --input " +
                                   tmp_.file("in.json") + " --max-new-tokens 12 --greedy --json");
  EXPECT_EQ(by_text["new_tokens"], by_ids["new_tokens"]);
  EXPECT_EQ(by_text["prompt_tokens"], ids.size());

  RunResult detok =
      run("detokenize --model " + model_ + " '" + by_text["new_tokens"][0].dump() + "'", false);
  ASSERT_EQ(detok.status, 0);
  std::string expected = detok.output;
  if (!expected.empty() && expected.back() == '\n') expected.pop_back();
  EXPECT_EQ(by_text["text"].get<std::string>(), expected);
}

TEST_F(TextCliTest, ChatRequestUsesTheChatFormat) {
  std::ofstream(tmp_.file("chat.json"))
      << R"({"messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "Hi"}]})";
  nlohmann::json prompt =
      run_json("tokenize --model " + model_ + " --chat " + tmp_.file("chat.json"));
  nlohmann::json out = run_json("generate --model " + model_ + " --chat " + tmp_.file("chat.json") +
                                " --max-new-tokens 4 --greedy --json");
  EXPECT_EQ(out["prompt_tokens"], prompt.size());
  EXPECT_EQ(out["new_tokens"][0].size(), 4u);
  RunResult bad = run("generate --model " + model_ + " --chat " + tmp_.file("missing.json"));
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.output.find("missing.json"), std::string::npos) << bad.output;
  RunResult both =
      run("generate --model " + model_ + " --prompt hi --chat " + tmp_.file("chat.json"));
  EXPECT_EQ(both.status, 1);
  EXPECT_NE(both.output.find("exactly one of --input, --prompt, --chat"), std::string::npos);
}

TEST_F(TextCliTest, InteractiveChatAnswersEveryTurn) {
  RunResult r = run(
      "chat --model " + model_ + " --max-new-tokens 3 --greedy <<'EOF'\nHello\n/reset\nAgain\nEOF",
      /*with_stderr=*/false);
  ASSERT_EQ(r.status, 0) << r.output;
  // Prompts: before "Hello", before "/reset", before "Again", and the final one at end of input.
  size_t prompts = 0;
  for (size_t at = r.output.find("> "); at != std::string::npos; at = r.output.find("> ", at + 2)) {
    ++prompts;
  }
  EXPECT_GE(prompts, 4u) << r.output;
  // The same conversation with a narrower KV cache.
  RunResult narrow = run(
      "chat --model " + model_ + " --max-new-tokens 3 --greedy --kv-cache int8 <<'EOF'\nHello\nEOF",
      /*with_stderr=*/false);
  ASSERT_EQ(narrow.status, 0) << narrow.output;
  EXPECT_NE(narrow.output.find("> "), std::string::npos) << narrow.output;
}

}  // namespace
}  // namespace mistral::testing
