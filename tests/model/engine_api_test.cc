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

// Devices: a name that is not one is refused naming the accepted ones; "cuda" without a GPU (or
// in a build without CUDA) is an error that says why, never a crash.
TEST(EngineApi, DeviceNames) {
  for (const std::string bad : {"gpu", "cuda:", "cuda:x", "cuda0", "cpu:1"}) {
    EngineOptions options;
    options.device = bad;
    auto engine = Engine::load(fixture_dir("gqa"), options);
    ASSERT_FALSE(engine.ok()) << bad;
    EXPECT_NE(engine.status().message().find("expected cpu, cuda or cuda:N"), std::string::npos)
        << engine.status().message();
  }
  auto cpu = make_backend("cpu");
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ((*cpu)->name(), "cpu");
  auto gpu = make_backend("cuda:0");
  if (!gpu.ok()) {
    const std::string& m = gpu.status().message();
    EXPECT_TRUE(m.find("no CUDA backend") != std::string::npos ||
                m.find("no CUDA device") != std::string::npos)
        << m;
  }
}

// A narrower KV cache through the public API: new_cache(..., type) and
// GenerationConfig::kv_cache_dtype (kv_cache_fixture_test.cc holds them to HF's numbers).
TEST(EngineApi, KvCacheStorageTypes) {
  auto engine = Engine::load(fixture_dir("gqa"));
  ASSERT_TRUE(engine.ok()) << engine.status().message();
  Inputs in = read_inputs(fixture_dir("gqa") + "/inputs.json");
  nlohmann::json greedy = read_json(fixture_dir("gqa") + "/greedy.json");
  auto f32 = (*engine)->new_cache(in.batch, in.seq + 8);
  ASSERT_TRUE(f32.ok());
  EXPECT_EQ(f32->dtype(), DType::kF32);
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kI8}) {
    SCOPED_TRACE(dtype_name(dtype));
    auto cache = (*engine)->new_cache(in.batch, in.seq + 8, dtype);
    ASSERT_TRUE(cache.ok());
    EXPECT_EQ(cache->dtype(), dtype);
    EXPECT_LT(cache->bytes() * 2, f32->bytes() + 1);
    GenerationConfig gen;
    gen.max_new_tokens = 8;
    gen.sampling.greedy = true;
    gen.kv_cache_dtype = dtype;
    auto result = (*engine)->generate({in.row(0)}, gen);
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(result->kv_cache_bytes,
              KvCache::bytes_per_position((*engine)->config(), dtype) * (in.row(0).size() + 8));
    if (dtype == DType::kI8) {
      EXPECT_EQ(result->new_tokens[0].size(), 8u);  // held to top-1 agreement, not equality
    } else {
      EXPECT_EQ(result->new_tokens[0], greedy["new_tokens"][0].get<std::vector<int32_t>>());
    }
  }
  auto bad = (*engine)->new_cache(1, 8, DType::kI32);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("storage type I32"), std::string::npos);
  GenerationConfig gen;
  gen.kv_cache_dtype = DType::kU8;
  auto refused = (*engine)->generate({in.row(0)}, gen);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("kv_cache_dtype"), std::string::npos);
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
