// The paged KV cache layout (model/kv_cache.h) on the CPU backend: whatever valid block tables the
// rows are given, a left-padded batch of 2 decoded far past the sliding window gives logits
// bit-identical to the default layout, for every storage type, and the kernels really go through
// the tables (kv_paging_util.h says how that is checked). Tables and layouts that break the rules
// are refused with messages naming the row, block or parameter.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/generator.h"
#include "kv_paging_util.h"
#include "model/checkpoint_writer.h"
#include "model/kv_cache.h"
#include "model/loader.h"
#include "temp_dir.h"
#include "tiny_config.h"

namespace mistral::testing {
namespace {

constexpr int64_t kBatch = 2;

struct PagingCase {
  DType dtype;
  std::optional<int64_t> window;
};

class KvPagingTest : public ::testing::TestWithParam<PagingCase> {};

TEST_P(KvPagingTest, AnyBlockTableGivesTheDefaultLayoutsLogitsBitForBit) {
  const auto [dtype, window] = GetParam();
  TempDir tmp;
  const std::string dir = tmp.file("model");
  const Status written = write_random_checkpoint(tiny_config(window), dir, DType::kF32, 11, 0.1f);
  ASSERT_TRUE(written.ok()) << written.message();
  auto model = load_model(dir, make_cpu_backend());
  ASSERT_TRUE(model.ok()) << model.status().message();
  // 7 prompt tokens, 4 more in one call and 12 steps: with the window of 5 the ring wraps
  // several times.
  expect_paging_invisible(**model, dtype, /*prompt=*/7, /*chunk=*/4, /*steps=*/12);
}

INSTANTIATE_TEST_SUITE_P(
    TypesAndWindows, KvPagingTest,
    ::testing::Values(PagingCase{DType::kF32, std::nullopt}, PagingCase{DType::kF32, 5},
                      PagingCase{DType::kBF16, std::nullopt}, PagingCase{DType::kBF16, 5},
                      PagingCase{DType::kF16, 5}, PagingCase{DType::kI8, std::nullopt},
                      PagingCase{DType::kI8, 5}),
    [](const ::testing::TestParamInfo<PagingCase>& info) {
      return std::string(dtype_name(info.param.dtype)) +
             (info.param.window ? "_window" + std::to_string(*info.param.window) : "_full");
    });

// GenerationConfig::kv_block_size: the same tokens whatever the block size; a negative one is
// refused naming the field.
TEST(KvPaging, GenerationTakesTheBlockSize) {
  TempDir tmp;
  const std::string dir = tmp.file("model");
  ASSERT_TRUE(write_random_checkpoint(tiny_config(5), dir, DType::kF32, 12, 0.1f).ok());
  auto model = load_model(dir, make_cpu_backend());
  ASSERT_TRUE(model.ok()) << model.status().message();
  const std::vector<std::vector<int32_t>> prompts = {{1, 7, 9, 30, 4}, {1, 50, 3}};
  GenerationConfig gen;
  gen.max_new_tokens = 12;
  gen.sampling.greedy = true;
  auto plain = generate(**model, prompts, gen);
  ASSERT_TRUE(plain.ok()) << plain.status().message();
  for (int64_t block_size : {1, 2, 3, 7}) {
    gen.kv_block_size = block_size;
    auto paged = generate(**model, prompts, gen);
    ASSERT_TRUE(paged.ok()) << paged.status().message();
    EXPECT_EQ(paged->new_tokens, plain->new_tokens) << "block size " << block_size;
  }
  gen.kv_block_size = -1;
  auto bad = generate(**model, prompts, gen);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("kv_block_size must be in"), std::string::npos)
      << bad.status().message();
}

void expect_refused(const Status& s, const std::string& needle) {
  ASSERT_FALSE(s.ok()) << "accepted; expected: " << needle;
  EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
}

TEST(KvPaging, InvalidTablesAreRefusedAndChangeNothing) {
  // Capacity 10 in blocks of 4: 3 blocks per row, rows 0 and 1 on blocks 0-2 and 3-5 of 8.
  KvCacheLayout layout;
  layout.block_size = 4;
  layout.num_blocks = 8;
  auto cache = KvCache::create(tiny_config(), kBatch, 10, DType::kF32, layout);
  ASSERT_TRUE(cache.ok()) << cache.status().message();
  ASSERT_EQ(cache->blocks_per_row(), 3);
  EXPECT_EQ(cache->row_block_table(0), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(cache->row_block_table(1), (std::vector<int32_t>{3, 4, 5}));

  expect_refused(cache->set_block_table(2, std::vector<int32_t>{5, 6, 7}),
                 "row 2 is not in [0, 2)");
  expect_refused(cache->set_block_table(-1, std::vector<int32_t>{5, 6, 7}), "row -1");
  expect_refused(cache->set_block_table(1, std::vector<int32_t>{6, 7}),
                 "row 1 has 2 blocks, but a row has blocks_per_row = 3");
  expect_refused(cache->set_block_table(1, std::vector<int32_t>{6, 7, 8}),
                 "row 1 (logical block 2): block 8 is not in [0, num_blocks = 8)");
  expect_refused(cache->set_block_table(0, std::vector<int32_t>{-1, 6, 7}),
                 "row 0 (logical block 0): block -1 is not in");
  expect_refused(cache->set_block_table(1, std::vector<int32_t>{6, 7, 6}),
                 "row 1 (logical block 2): block 6 is already used by row 1 (logical block 0)");
  expect_refused(cache->set_block_table(1, std::vector<int32_t>{6, 2, 7}),
                 "row 1 (logical block 1): block 2 is already used by row 0 (logical block 2)");
  expect_refused(cache->set_block_tables(std::vector<int32_t>{0, 1, 2, 3, 4}),
                 "5 entries, but batch 2 x blocks_per_row 3 = 6");
  expect_refused(cache->set_block_tables(std::vector<int32_t>{7, 1, 2, 3, 4, 7}),
                 "row 1 (logical block 2): block 7 is already used by row 0 (logical block 0)");
  EXPECT_EQ(cache->row_block_table(0), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(cache->row_block_table(1), (std::vector<int32_t>{3, 4, 5}));
  std::vector<int32_t> on_host(6);
  std::memcpy(on_host.data(), cache->block_table(), on_host.size() * sizeof(int32_t));
  EXPECT_EQ(on_host, (std::vector<int32_t>{0, 1, 2, 3, 4, 5}));

  // A row may take blocks that are free, including its own in another order.
  EXPECT_TRUE(cache->set_block_table(1, std::vector<int32_t>{7, 3, 6}).ok());
  EXPECT_TRUE(cache->set_block_table(0, std::vector<int32_t>{2, 5, 0}).ok());
  EXPECT_TRUE(cache->set_block_tables(std::vector<int32_t>{7, 6, 5, 4, 3, 2}).ok());
  std::memcpy(on_host.data(), cache->block_table(), on_host.size() * sizeof(int32_t));
  EXPECT_EQ(on_host, (std::vector<int32_t>{7, 6, 5, 4, 3, 2}));
}

TEST(KvPaging, LayoutsThatCannotHoldTheBatchAreRefused) {
  auto with = [](int64_t block_size, int64_t num_blocks) {
    KvCacheLayout layout;
    layout.block_size = block_size;
    layout.num_blocks = num_blocks;
    return KvCache::create(tiny_config(), kBatch, 10, DType::kF32, layout).status();
  };
  expect_refused(with(-3, 0),
                 "block_size must be in [1, 2147483647] (or 0 for the default), got -3");
  expect_refused(with(int64_t{1} << 31, 0), "block_size");
  expect_refused(with(4, -1), "num_blocks must be positive");
  expect_refused(with(4, 5), "num_blocks 5 is less than the 6 blocks a batch of 2 needs");
  EXPECT_TRUE(with(0, 0).ok());  // the defaults
  EXPECT_TRUE(with(4, 6).ok());
  EXPECT_TRUE(with(64, 0).ok());  // one block per row, longer than the row
  auto big = KvCache::create(tiny_config(), kBatch, 10, DType::kI8, KvCacheLayout{64, 5});
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->blocks_per_row(), 1);
  EXPECT_EQ(big->bytes(), KvCache::bytes_per_position(tiny_config(), DType::kI8) * 5 * 64);
}

}  // namespace
}  // namespace mistral::testing
