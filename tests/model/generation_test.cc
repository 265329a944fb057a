// generate() and forward() on bad requests (a clear error naming the parameter, nothing changed)
// and the generation controls: seeds, stop tokens, callbacks, zero tokens.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "engine/generator.h"
#include "fixture_util.h"

namespace mistral::testing {
namespace {

std::vector<std::vector<int32_t>> two_prompts() { return {{5, 6, 7, 8}, {9, 10}}; }

GenerationConfig greedy(int64_t n) {
  GenerationConfig gen;
  gen.max_new_tokens = n;
  gen.sampling.greedy = true;
  return gen;
}

void expect_error(const Status& s, const std::string& needle) {
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
}

TEST(GenerationRequest, BadRequestsNameTheParameter) {
  auto model = load_fixture_model("gqa");
  ASSERT_NE(model, nullptr);
  const ModelConfig& c = model->config();
  expect_error(validate_generation_request(c, {}, greedy(4)), "prompts");
  expect_error(validate_generation_request(c, {{}}, greedy(4)), "prompt 0 is empty");
  expect_error(validate_generation_request(c, {{5, -1}}, greedy(4)), "prompt 0 token 1 = -1");
  expect_error(validate_generation_request(c, {{5}, {5, 256}}, greedy(4)),
               "prompt 1 token 1 = 256");
  expect_error(validate_generation_request(c, two_prompts(), greedy(-1)), "max_new_tokens");
  expect_error(validate_generation_request(c, two_prompts(), greedy(int64_t{1} << 40)),
               "exceeds the context");
  expect_error(validate_generation_request(c, {std::vector<int32_t>(250, 5)}, greedy(10)),
               "exceeds the context");
  GenerationConfig sampled = greedy(4);
  sampled.sampling.greedy = false;
  sampled.sampling.temperature = std::numeric_limits<float>::quiet_NaN();
  expect_error(validate_generation_request(c, two_prompts(), sampled), "temperature");
  sampled.sampling.temperature = -1;
  expect_error(validate_generation_request(c, two_prompts(), sampled), "temperature");
  sampled.sampling.temperature = 1;
  sampled.sampling.top_p = 0;
  expect_error(validate_generation_request(c, two_prompts(), sampled), "top_p");
  sampled.sampling.top_p = 1.5f;
  expect_error(validate_generation_request(c, two_prompts(), sampled), "top_p");
  GenerationConfig stops = greedy(4);
  stops.stop_token_ids = {999};
  expect_error(validate_generation_request(c, two_prompts(), stops), "stop token id 999");
  // generate() refuses the same requests without running anything.
  EXPECT_FALSE(generate(*model, {{}}, greedy(4)).ok());
}

TEST(GenerationRequest, ZeroNewTokensReturnsEmptyRows) {
  auto model = load_fixture_model("gqa");
  ASSERT_NE(model, nullptr);
  auto r = generate(*model, two_prompts(), greedy(0));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->new_tokens[0].empty() && r->new_tokens[1].empty());
}

TEST(Generation, SameSeedSameTokensOtherSeedOtherTokens) {
  auto model = load_fixture_model("gqa");
  ASSERT_NE(model, nullptr);
  GenerationConfig gen;
  gen.max_new_tokens = 24;
  gen.sampling.temperature = 1.5f;
  gen.sampling.top_k = 50;
  gen.sampling.top_p = 0.95f;
  gen.sampling.seed = 7;
  auto a = generate(*model, two_prompts(), gen);
  auto b = generate(*model, two_prompts(), gen);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->new_tokens, b->new_tokens);
  gen.sampling.seed = 8;
  auto c = generate(*model, two_prompts(), gen);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->new_tokens, c->new_tokens);
}

TEST(Generation, BatchedGreedyEqualsEachPromptAlone) {
  auto model = load_fixture_model("sliding_window");
  ASSERT_NE(model, nullptr);
  auto batched = generate(*model, two_prompts(), greedy(20));
  ASSERT_TRUE(batched.ok());
  for (size_t b = 0; b < 2; ++b) {
    auto alone = generate(*model, {two_prompts()[b]}, greedy(20));
    ASSERT_TRUE(alone.ok());
    EXPECT_EQ(alone->new_tokens[0], batched->new_tokens[b]) << "row " << b;
  }
}

TEST(Generation, StopTokensAndCallback) {
  auto model = load_fixture_model("gqa");
  ASSERT_NE(model, nullptr);
  auto full = generate(*model, two_prompts(), greedy(8));
  ASSERT_TRUE(full.ok());
  GenerationConfig gen = greedy(8);
  gen.stop_token_ids = {full->new_tokens[0][2]};
  auto stopped = generate(*model, two_prompts(), gen);
  ASSERT_TRUE(stopped.ok());
  const auto& row0 = stopped->new_tokens[0];
  ASSERT_LE(row0.size(), 3u);
  EXPECT_EQ(row0.back(), full->new_tokens[0][2]);
  EXPECT_EQ(stopped->finish_reasons[0], FinishReason::kStopToken);

  int calls = 0;
  gen = greedy(8);
  gen.on_token = [&](int64_t, int32_t) { return ++calls < 3; };
  auto cut = generate(*model, two_prompts(), gen);
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(cut->finish_reasons[1], FinishReason::kCallback);
}

TEST(Forward, BadInputsLeaveTheCacheUntouched) {
  auto model = load_fixture_model("gqa");
  ASSERT_NE(model, nullptr);
  auto cache = KvCache::create(model->config(), 1, 4);
  ASSERT_TRUE(cache.ok());
  const std::vector<uint8_t> ones(2, 1);
  expect_error(model->forward(std::vector<int32_t>{5, 256}, ones, 1, *cache).status(),
               "input_ids[0][1] = 256");
  expect_error(model->forward(std::vector<int32_t>{-3, 5}, ones, 1, *cache).status(),
               "input_ids[0][0] = -3");
  expect_error(
      model->forward(std::vector<int32_t>{5, 6}, std::vector<uint8_t>{1, 2}, 1, *cache).status(),
      "attention_mask[0][1]");
  expect_error(model->forward(std::vector<int32_t>{5, 6}, ones, 2, *cache).status(), "batch");
  EXPECT_EQ(cache->length(), 0);
  ASSERT_TRUE(
      model->forward(std::vector<int32_t>{5, 6, 7}, std::vector<uint8_t>(3, 1), 1, *cache).ok());
  expect_error(model->forward(std::vector<int32_t>{5, 6}, ones, 1, *cache).status(),
               "kv cache full");
  EXPECT_EQ(cache->length(), 3);
}

TEST(KvCacheLimits, AbsurdSizesFailTheMemoryCheck) {
  auto config = preset_config("7b");
  ASSERT_TRUE(config.ok());
  config->sliding_window.reset();
  config->max_position_embeddings = kMaxPositionEmbeddingsLimit;
  auto cache = KvCache::create(*config, 64, kMaxPositionEmbeddingsLimit);
  expect_error(cache.status(), "MiB of memory are available");
  expect_error(KvCache::create(*config, 1, kMaxPositionEmbeddingsLimit + 1).status(),
               "max_position_embeddings");
  expect_error(KvCache::create(*config, 0, 8).status(), "batch");
}

TEST(KvCacheLimits, SlidingWindowCacheHoldsOnlyTheWindow) {
  auto model = load_fixture_model("sliding_window");
  ASSERT_NE(model, nullptr);
  auto cache = KvCache::create(model->config(), 1, 200);
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ(cache->capacity(), *model->config().sliding_window);
}

}  // namespace
}  // namespace mistral::testing
