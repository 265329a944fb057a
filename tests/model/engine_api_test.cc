// The public API (include/mistral/engine.h) end to end on a fixture model.
#include <gtest/gtest.h>

#include "fixture_util.h"
#include "mistral/engine.h"

namespace mistral::testing {
namespace {

TEST(EngineApi, LoadForwardGenerate) {
  auto engine = Engine::load(fixture_dir("gqa"));
  ASSERT_TRUE(engine.ok()) << engine.status().message();
  Inputs in = read_inputs(fixture_dir("gqa") + "/inputs.json");
  auto cache = (*engine)->new_cache(in.batch, in.seq);
  ASSERT_TRUE(cache.ok());
  auto out = (*engine)->forward(in.ids, in.mask, in.batch, *cache);
  ASSERT_TRUE(out.ok());
  Array expected = read_array(fixture_dir("gqa") + "/expected.safetensors", "logits");
  expect_close(masked_diff(out->logits.data(), expected.data.data(), in.mask, expected.shape[2]),
               "engine forward");

  GenerationConfig gen;
  gen.max_new_tokens = 8;
  gen.sampling.greedy = true;
  auto result = (*engine)->generate({in.row(0)}, gen);
  ASSERT_TRUE(result.ok());
  nlohmann::json greedy = read_json(fixture_dir("gqa") + "/greedy.json");
  EXPECT_EQ(result->new_tokens[0], greedy["new_tokens"][0].get<std::vector<int32_t>>());
}

TEST(EngineApi, ErrorsNameTheProblem) {
  auto missing = Engine::load("/nonexistent/checkpoint");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/checkpoint"), std::string::npos);
  EngineOptions options;
  options.threads = -2;
  EXPECT_FALSE(Engine::load(fixture_dir("gqa"), options).ok());
}

}  // namespace
}  // namespace mistral::testing
