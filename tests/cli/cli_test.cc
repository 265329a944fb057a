// The `mistral` tool end to end: the documented commands work on a fixture model, and bad input
// files or options end with exit status 1 and a message naming the file, field or option.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "run_cli.h"

namespace {

using mistral::testing::run;
using mistral::testing::RunResult;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mistral_cli_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& content) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << content;
    return path;
  }
  std::string model_ = std::string(MISTRAL_FIXTURES_DIR) + "/gqa";
  std::string dir_;
};

void expect_failure(const RunResult& r, const std::string& needle) {
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find(needle), std::string::npos) << r.output;
}

TEST_F(CliTest, BadInputFilesNameTheProblem) {
  const std::string gen = "generate --model " + model_ + " --max-new-tokens 2 --greedy --input ";
  expect_failure(run(gen + dir_ + "/absent.json"), "absent.json: cannot open");
  expect_failure(run(gen + write("a.json", "{not json")), "a.json: not a JSON object");
  expect_failure(run(gen + write("b.json", "{\"ids\": [[1]]}")), "missing field \"input_ids\"");
  expect_failure(run(gen + write("c.json", "{\"input_ids\": [[1, 2], [3]]}")), "pad the batch");
  expect_failure(run(gen + write("d.json", "{\"input_ids\": [[1, \"x\"]]}")),
                 "input_ids[0][1] must be an integer");
  expect_failure(run(gen + write("e.json", "{\"input_ids\": [[1, -5]]}")), "input_ids[0][1] = -5");
  expect_failure(run(gen + write("f.json", "{\"input_ids\": [[1, 999]]}")), "token 1 = 999");
  expect_failure(
      run(gen + write("g.json", "{\"input_ids\": [[1, 2]], \"attention_mask\": [[1, 1, 1]]}")),
      "attention_mask shape");
  expect_failure(
      run(gen + write("h.json", "{\"input_ids\": [[1, 2]], \"attention_mask\": [[1, 7]]}")),
      "attention_mask[0][1] must be 0 or 1");
  expect_failure(run(gen + write("i.json", "{\"input_ids\": [[]]}")), "empty rows");
}

TEST_F(CliTest, BadOptionsNameTheOption) {
  const std::string input = write("in.json", "{\"input_ids\": [[5, 6, 7]]}");
  const std::string gen = "generate --model " + model_ + " --input " + input;
  expect_failure(run(gen + " --max-new-tokens -1"), "max_new_tokens");
  expect_failure(run(gen + " --max-new-tokens 100000"), "exceeds the context");
  expect_failure(run(gen + " --temperature nan"), "temperature");
  expect_failure(run(gen + " --top-p 1.5"), "top_p");
  expect_failure(run(gen + " --dtype int3"), "--dtype");
  expect_failure(run("generate --model " + dir_ + " --input " + input), "no checkpoint found");
  EXPECT_NE(run("frobnicate").status, 0);
}

TEST_F(CliTest, LogitsGenerateSaveAndRandomCheckpointWork) {
  const std::string input = write("in.json",
                                  "{\"input_ids\": [[5, 6, 7], [0, 8, 9]], "
                                  "\"attention_mask\": [[1, 1, 1], [0, 1, 1]]}");
  RunResult logits = run("logits --model " + model_ + " --input " + input + " --out " + dir_ +
                         "/out.safetensors --hidden-states");
  ASSERT_EQ(logits.status, 0) << logits.output;
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/out.safetensors"));

  RunResult gen = run("generate --model " + model_ + " --input " + input +
                      " --max-new-tokens 5 --greedy --json");
  ASSERT_EQ(gen.status, 0) << gen.output;
  EXPECT_NE(gen.output.find("\"new_tokens\""), std::string::npos) << gen.output;

  RunResult save = run("save --model " + model_ + " --out " + dir_ + "/saved --dtype bf16");
  ASSERT_EQ(save.status, 0) << save.output;
  RunResult again = run("generate --model " + dir_ + "/saved --input " + input +
                        " --max-new-tokens 3 --greedy --json");
  EXPECT_EQ(again.status, 0) << again.output;

  RunResult random =
      run("random-checkpoint --preset tiny --layers 1 --out " + dir_ + "/rnd --seed 3");
  ASSERT_EQ(random.status, 0) << random.output;
  RunResult bench =
      run("bench --model " + dir_ + "/rnd --prompt-tokens 8 --new-tokens 4 --threads 1");
  ASSERT_EQ(bench.status, 0) << bench.output;
  EXPECT_NE(bench.output.find("\"decode_tok_s\""), std::string::npos) << bench.output;
  EXPECT_NE(bench.output.find("\"prefill_tok_s\""), std::string::npos) << bench.output;
  expect_failure(run("random-checkpoint --preset 13b --out " + dir_ + "/x"), "unknown preset");
}

TEST_F(CliTest, QuantizeWritesACheckpointEveryCommandLoads) {
  ASSERT_EQ(run("random-checkpoint --preset tiny --layers 1 --out " + dir_ + "/dense").status, 0);
  RunResult quantize =
      run("quantize --model " + dir_ + "/dense --out " + dir_ + "/q4 --weights int4");
  ASSERT_EQ(quantize.status, 0) << quantize.output;
  const std::string input = write("in.json", "{\"input_ids\": [[5, 6, 7]]}");
  RunResult gen = run("generate --model " + dir_ + "/q4 --input " + input +
                      " --max-new-tokens 3 --greedy --json");
  EXPECT_EQ(gen.status, 0) << gen.output;
  RunResult bench = run("bench --model " + dir_ + "/q4 --prompt-tokens 4 --new-tokens 2");
  ASSERT_EQ(bench.status, 0) << bench.output;
  EXPECT_NE(bench.output.find("\"weights\": \"int4\""), std::string::npos) << bench.output;
  RunResult at_load =
      run("bench --model " + dir_ + "/dense --weights int8 --prompt-tokens 4 " + "--new-tokens 2");
  ASSERT_EQ(at_load.status, 0) << at_load.output;
  EXPECT_NE(at_load.output.find("\"weights\": \"int8\""), std::string::npos) << at_load.output;

  expect_failure(run("bench --model " + dir_ + "/dense --weights q4_0"), "--weights");
  expect_failure(run("quantize --model " + dir_ + "/q4 --out " + dir_ + "/q8 --weights int8"),
                 "already quantized to int4");
  RunResult missing = run("quantize --model " + dir_ + "/dense --out " + dir_ + "/x");
  EXPECT_NE(missing.status, 0);  // CLI11's usage error
  EXPECT_NE(missing.output.find("--weights is required"), std::string::npos) << missing.output;
}

// --kv-cache and --kv-block-size on the commands that generate: a narrower cache runs (and on
// the gqa fixture gives HF's greedy tokens, as kv_cache_fixture_test.cc checks in depth), so does
// a paged one of other blocks; anything else is refused before the model is loaded, naming the
// option.
TEST_F(CliTest, KvCacheOption) {
  const std::string fixture = std::string(MISTRAL_FIXTURES_DIR) + "/gqa";
  RunResult gen = run("generate --model " + model_ + " --input " + fixture +
                          "/inputs.json --max-new-tokens 8 --greedy --json --kv-cache bf16",
                      /*with_stderr=*/false);
  ASSERT_EQ(gen.status, 0) << gen.output;
  nlohmann::json out = nlohmann::json::parse(gen.output, nullptr, false);
  ASSERT_FALSE(out.is_discarded()) << gen.output;
  std::ifstream greedy_file(fixture + "/greedy.json");
  const nlohmann::json greedy = nlohmann::json::parse(greedy_file, nullptr, false);
  EXPECT_EQ(out["new_tokens"], greedy["new_tokens"]);

  RunResult bench = run(
      "bench --model " + model_ + " --prompt-tokens 8 --new-tokens 4 --threads 1 --kv-cache int8",
      /*with_stderr=*/false);
  ASSERT_EQ(bench.status, 0) << bench.output;
  nlohmann::json b = nlohmann::json::parse(bench.output, nullptr, false);
  ASSERT_FALSE(b.is_discarded()) << bench.output;
  EXPECT_EQ(b["kv_cache"], "int8");
  // 2 layers x 2 kv heads x (16 int8 + a float scale) x keys and values, 8 + 5 positions.
  EXPECT_EQ(b["kv_cache_bytes"], 2 * 2 * 2 * (16 + 4) * 13);

  // --kv-block-size: the same tokens; memory rounded up to whole blocks (13 -> 16 positions).
  RunResult paged = run("generate --model " + model_ + " --input " + fixture +
                            "/inputs.json --max-new-tokens 8 --greedy --json --kv-block-size 3",
                        /*with_stderr=*/false);
  ASSERT_EQ(paged.status, 0) << paged.output;
  nlohmann::json paged_out = nlohmann::json::parse(paged.output, nullptr, false);
  ASSERT_FALSE(paged_out.is_discarded()) << paged.output;
  EXPECT_EQ(paged_out["new_tokens"], greedy["new_tokens"]);
  RunResult bench4 = run("bench --model " + model_ +
                             " --prompt-tokens 8 --new-tokens 4 --threads 1 --kv-cache int8"
                             " --kv-block-size 4",
                         /*with_stderr=*/false);
  ASSERT_EQ(bench4.status, 0) << bench4.output;
  nlohmann::json b4 = nlohmann::json::parse(bench4.output, nullptr, false);
  ASSERT_FALSE(b4.is_discarded()) << bench4.output;
  EXPECT_EQ(b4["kv_cache_bytes"], 2 * 2 * 2 * (16 + 4) * 16);

  const std::string input = write("in.json", "{\"input_ids\": [[5, 6, 7]]}");
  expect_failure(run("generate --model " + model_ + " --input " + input + " --kv-cache f8"),
                 "--kv-cache: \"f8\" is not one of f32, bf16, f16, int8");
  expect_failure(run("generate --model " + model_ + " --prompt hi --kv-cache int4"), "--kv-cache");
  expect_failure(run("bench --model " + model_ + " --kv-cache fp8"), "--kv-cache");
  expect_failure(run("chat --model " + model_ + " --kv-cache BF17 </dev/null"), "--kv-cache");
  for (const char* bad : {"generate --prompt hi --kv-block-size 0", "bench --kv-block-size -2"}) {
    RunResult r = run(std::string(bad) + " --model " + model_);
    EXPECT_NE(r.status, 0);  // CLI11's usage error
    EXPECT_NE(r.output.find("--kv-block-size: Value"), std::string::npos) << r.output;
  }
}

}  // namespace
