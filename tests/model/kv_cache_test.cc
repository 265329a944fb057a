// KvCache's storage types: what store_layer writes for each (F32 copied, BF16/F16 rounded to
// nearest even, I8 as round(x / s) with s = max|x| / 127 per head vector), where it writes it in
// the ring, and the sizes that create() checks and bytes() reports.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/half.h"
#include "fixture_util.h"
#include "model/kv_cache.h"
#include "random_values.h"
#include "tiny_config.h"

namespace mistral::testing {
namespace {

TEST(KvCacheDType, ParsesTheCliSpellings) {
  EXPECT_EQ(parse_kv_cache_dtype("f32"), DType::kF32);
  EXPECT_EQ(parse_kv_cache_dtype("bf16"), DType::kBF16);
  EXPECT_EQ(parse_kv_cache_dtype("f16"), DType::kF16);
  EXPECT_EQ(parse_kv_cache_dtype("int8"), DType::kI8);
  EXPECT_EQ(parse_kv_cache_dtype("float16"), DType::kF16);
  for (const char* bad : {"", "fp8", "int4", "i32", "F64", "int8 "}) {
    EXPECT_FALSE(parse_kv_cache_dtype(bad).has_value()) << bad;
  }
  EXPECT_EQ(kv_cache_dtype_name(DType::kI8), "int8");
  EXPECT_EQ(kv_cache_dtype_name(DType::kBF16), "bf16");
}

TEST(KvCacheDType, OtherStorageTypesAreRefused) {
  for (DType dtype : {DType::kI32, DType::kF64, DType::kU8, DType::kBool}) {
    auto cache = KvCache::create(tiny_config(), 1, 8, dtype);
    ASSERT_FALSE(cache.ok());
    EXPECT_NE(cache.status().message().find("kv cache: storage type"), std::string::npos)
        << cache.status().message();
  }
}

// Mistral-7B: 32 layers x 8 kv heads x 128 head_dim, keys and values.
TEST(KvCacheDType, BytesPerPositionOfMistral7B) {
  auto config = preset_config("7b");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(KvCache::bytes_per_position(*config, DType::kF32), 262144u);  // 256 KiB
  EXPECT_EQ(KvCache::bytes_per_position(*config, DType::kBF16), 131072u);
  EXPECT_EQ(KvCache::bytes_per_position(*config, DType::kF16), 131072u);
  EXPECT_EQ(KvCache::bytes_per_position(*config, DType::kI8), 67584u);  // 2*32*8*(128 + 4)
}

// Memory is num_blocks * block_size positions: by default blocks of 16, so 20 positions per row
// take two blocks (32 positions); blocks of 5 fit them exactly, and a 10-position cache gets one
// block of 10 (the default is never longer than the capacity).
TEST(KvCacheDType, BytesAreTheRealSize) {
  const ModelConfig c = tiny_config();  // 2 layers, 2 kv heads, head_dim 8
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16, DType::kI8}) {
    auto cache = KvCache::create(c, 3, 20, dtype);
    ASSERT_TRUE(cache.ok()) << cache.status().message();
    EXPECT_EQ(cache->block_size(), 16);
    EXPECT_EQ(cache->num_blocks(), 6);
    const uint64_t per_vector = 8 * dtype_size(dtype) + (dtype == DType::kI8 ? 4 : 0);
    EXPECT_EQ(cache->bytes(), 2u * 2 * 2 * 3 * 32 * per_vector) << dtype_name(dtype);
    EXPECT_EQ(cache->bytes(), KvCache::bytes_per_position(c, dtype) * 3 * 32);
    auto exact = KvCache::create(c, 3, 20, dtype, KvCacheLayout{5, 0});
    ASSERT_TRUE(exact.ok()) << exact.status().message();
    EXPECT_EQ(exact->num_blocks(), 12);
    EXPECT_EQ(exact->bytes(), KvCache::bytes_per_position(c, dtype) * 3 * 20);
    auto short_cache = KvCache::create(c, 3, 10, dtype);
    ASSERT_TRUE(short_cache.ok()) << short_cache.status().message();
    EXPECT_EQ(short_cache->block_size(), 10);
    EXPECT_EQ(short_cache->bytes(), KvCache::bytes_per_position(c, dtype) * 3 * 10);
    EXPECT_EQ(cache->dtype(), dtype);
    EXPECT_EQ(cache->key_scales(0) != nullptr, dtype == DType::kI8);
  }
}

// The memory check counts the bytes of the storage type: the MiB it reports for an absurd cache
// scale with the type's bytes per position.
TEST(KvCacheDType, MemoryCheckUsesTheStorageSize) {
  auto config = preset_config("7b");
  ASSERT_TRUE(config.ok());
  config->sliding_window.reset();
  config->max_position_embeddings = kMaxPositionEmbeddingsLimit;
  auto needed_mib = [&](DType dtype) -> double {
    auto cache = KvCache::create(*config, 64, kMaxPositionEmbeddingsLimit, dtype);
    EXPECT_FALSE(cache.ok());
    if (cache.ok()) return 0;
    const std::string& m = cache.status().message();
    EXPECT_NE(m.find("MiB of memory are available"), std::string::npos) << m;
    const std::string type = std::string("(").append(kv_cache_dtype_name(dtype)).append(")");
    EXPECT_NE(m.find(type), std::string::npos) << m;
    const size_t at = m.find("needs ");
    return at == std::string::npos ? 0 : std::strtod(m.c_str() + at + 6, nullptr);
  };
  const double f32 = needed_mib(DType::kF32);
  const double expected_f32 = 262144.0 * 64 * kMaxPositionEmbeddingsLimit / (1 << 20);
  EXPECT_NEAR(f32, expected_f32, 1);
  EXPECT_NEAR(needed_mib(DType::kBF16), expected_f32 / 2, 1);
  EXPECT_NEAR(needed_mib(DType::kF16), expected_f32 / 2, 1);
  EXPECT_NEAR(needed_mib(DType::kI8), expected_f32 * 67584 / 262144, 1);
}

// Stores T tokens into a cache of each type and reads back every element in its slot, at the
// position the rows' block tables give (blocks of 3 positions, the rows' blocks interleaved and
// reversed in a pool of 5).
class KvCacheStoreTest : public ::testing::TestWithParam<DType> {};

TEST_P(KvCacheStoreTest, StoreLayerConvertsIntoTheRingSlot) {
  const DType dtype = GetParam();
  // A window of 4 under a 10-token limit: a rolling cache of 4 slots. Six tokens in one call keep
  // the last four (sequence indices 2..5, slots 2, 3, 0, 1); then two more wrap to slots 2, 3.
  const ModelConfig c = tiny_config(/*sliding_window=*/4);
  const int64_t batch = 2, heads = c.num_key_value_heads, hd = c.head_dim, kv_dim = heads * hd;
  auto cache = KvCache::create(c, batch, 10, dtype, KvCacheLayout{3, 5});
  ASSERT_TRUE(cache.ok());
  ASSERT_EQ(cache->capacity(), 4);
  ASSERT_EQ(cache->blocks_per_row(), 2);
  ASSERT_TRUE(cache->set_block_tables(std::vector<int32_t>{4, 1, 3, 0}).ok());
  EXPECT_EQ(kv_cache_position(cache->block_layout(), 4, 1, 2), 11);  // row 1 slot 2: block 3
  int64_t seq = 0;
  for (int64_t tokens : {6, 2}) {
    std::vector<float> k = randn(batch * tokens * kv_dim, 10 + tokens, 2.0f);
    std::vector<float> v = randn(batch * tokens * kv_dim, 20 + tokens, 2.0f);
    std::fill_n(k.begin() + kv_dim * (tokens - 1), hd, 0.0f);  // an all-zero head vector
    k[3] = 1e-30f;                                             // far below the others
    v[5] = -std::ldexp(1.0f, 20);                              // past f16's range
    for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
      cache->store_layer(layer, k.data(), v.data(), tokens);
    }
    const int64_t first = std::max<int64_t>(0, tokens - cache->capacity());
    for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t t = first; t < tokens; ++t) {
          const int64_t slot = (seq + t) % cache->capacity();
          for (int64_t h = 0; h < heads; ++h) {
            SCOPED_TRACE(::testing::Message() << dtype_name(dtype) << " layer " << layer << " b "
                                              << b << " t " << t << " h " << h);
            const int64_t vec =
                kv_cache_position(cache->block_layout(), cache->capacity(), b, slot) * heads + h;
            const float* kx = &k[(b * tokens + t) * kv_dim + h * hd];
            const float* vx = &v[(b * tokens + t) * kv_dim + h * hd];
            for (int pass = 0; pass < 2; ++pass) {
              const float* x = pass == 0 ? kx : vx;
              const void* stored = pass == 0 ? cache->keys(layer) : cache->values(layer);
              const float* scales =
                  pass == 0 ? cache->key_scales(layer) : cache->value_scales(layer);
              float absmax = 0;
              for (int64_t e = 0; e < hd; ++e) absmax = std::max(absmax, std::fabs(x[e]));
              for (int64_t e = 0; e < hd; ++e) {
                const size_t i = static_cast<size_t>(vec * hd + e);
                switch (dtype) {
                  case DType::kF32:
                    ASSERT_EQ(static_cast<const float*>(stored)[i], x[e]);
                    break;
                  case DType::kBF16:
                    ASSERT_EQ(static_cast<const BF16*>(stored)[i].bits, float_to_bf16(x[e]).bits);
                    break;
                  case DType::kF16:
                    ASSERT_EQ(static_cast<const F16*>(stored)[i].bits, float_to_f16(x[e]).bits);
                    break;
                  default: {
                    const float s = scales[vec];
                    ASSERT_EQ(s, absmax / 127.0f);
                    const int8_t q = static_cast<const int8_t*>(stored)[i];
                    const float expect_q = s > 0 ? std::nearbyint(x[e] / s) : 0.0f;
                    ASSERT_EQ(q, static_cast<int8_t>(expect_q)) << "x = " << x[e];
                    ASSERT_LE(std::fabs(q * s - x[e]), s / 2 * (1 + 1e-6)) << "x = " << x[e];
                  }
                }
              }
            }
          }
        }
      }
    }
    cache->advance(std::vector<uint8_t>(batch * tokens, 1).data(), tokens);
    seq += tokens;
  }
  EXPECT_EQ(cache->length(), 8);
  for (int64_t s = 0; s < 4; ++s) EXPECT_EQ(cache->slot_seq_index()[s], 4 + s);  // 4..7
}

INSTANTIATE_TEST_SUITE_P(AllTypes, KvCacheStoreTest,
                         ::testing::Values(DType::kF32, DType::kBF16, DType::kF16, DType::kI8),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(dtype_name(info.param));
                         });

}  // namespace
}  // namespace mistral::testing
