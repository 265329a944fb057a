// rope_qk_store_kv (one kernel) against rope_qk<bf16> then store_kv (two): the same bits in q, k
// and every position of both caches, for decode steps and chunks, a paged cache with a shuffled
// block table, a ring that keeps only the last `capacity` tokens of a chunk, and the sequence
// index read from device memory (as recorded CUDA graphs pass it).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.h"

namespace mistral::cuda::testing {
namespace {

struct StoreCase {
  std::string name;
  int64_t batch, tokens, heads, kv_heads, head_dim, capacity, first_seq_index;
  int64_t block_size = 0;  // 0: not paged
  bool index_on_device = false;
};

std::vector<uint16_t> bits_of(const std::vector<BF16>& v) {
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = v[i].bits;
  return b;
}

void check_rope_store(KernelContext& ctx, const StoreCase& c) {
  SCOPED_TRACE(c.name);
  const int64_t rows = c.batch * c.tokens, kv_dim = c.kv_heads * c.head_dim;
  const int64_t blocks_per_row = c.block_size > 0 ? c.capacity / c.block_size : 0;
  const int64_t positions_in_pool = c.batch * c.capacity;
  const uint32_t seed = static_cast<uint32_t>(c.tokens * 131 + c.capacity);
  std::vector<float> unused;
  const std::vector<BF16> q = to_bf16(randn(rows * c.heads * c.head_dim, seed), &unused);
  const std::vector<BF16> k = to_bf16(randn(rows * kv_dim, seed + 1), &unused);
  const std::vector<BF16> v = to_bf16(randn(rows * kv_dim, seed + 2), &unused);
  const std::vector<BF16> cache = to_bf16(randn(positions_in_pool * kv_dim, seed + 3), &unused);
  std::vector<int64_t> positions(rows);
  for (int64_t i = 0; i < rows; ++i) positions[i] = c.first_seq_index + (i % c.tokens) * 3 + i / 5;
  std::vector<float> inv_freq(c.head_dim / 2);
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    inv_freq[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / c.head_dim));
  }
  std::vector<int32_t> table(c.batch * blocks_per_row);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(seed));
  DeviceBuffer dpos = upload(positions), dinv = upload(inv_freq), dtable = upload(table);
  DeviceBuffer dindex = upload(std::vector<int64_t>{c.first_seq_index});

  struct Run {
    DeviceBuffer q, k, v, k_cache, v_cache;
  };
  auto run = [&](bool fused) {
    Run r{upload(q), upload(k), upload(v), upload(cache), upload(cache)};
    KvStoreParams p;
    p.batch = c.batch;
    p.new_tokens = c.tokens;
    p.num_kv_heads = c.kv_heads;
    p.head_dim = c.head_dim;
    p.capacity = c.capacity;
    p.block_size = c.block_size;
    p.blocks_per_row = blocks_per_row;
    p.block_table = c.block_size > 0 ? dtable.as<int32_t>() : nullptr;
    p.first_seq_index = c.index_on_device ? -1 : c.first_seq_index;
    p.first_seq_index_device = c.index_on_device ? dindex.as<int64_t>() : nullptr;
    p.k = r.k.as<bf16>();
    p.v = r.v.as<bf16>();
    p.k_cache = r.k_cache.as<bf16>();
    p.v_cache = r.v_cache.as<bf16>();
    if (fused) {
      rope_qk_store_kv(ctx, r.q.as<bf16>(), c.heads, dpos.as<int64_t>(), dinv.as<float>(), p);
    } else {
      rope_qk<bf16>(ctx, r.q.as<bf16>(), r.k.as<bf16>(), rows, c.heads, c.kv_heads, c.head_dim,
                    dpos.as<int64_t>(), dinv.as<float>());
      store_kv(ctx, p);
    }
    return r;
  };
  const Run want = run(false), got = run(true);
  auto same = [&](const DeviceBuffer& a, const DeviceBuffer& b, size_t n, const char* what) {
    EXPECT_EQ(bits_of(download<BF16>(a, n)), bits_of(download<BF16>(b, n))) << what;
  };
  same(got.q, want.q, q.size(), "q");
  same(got.k, want.k, k.size(), "k");
  same(got.k_cache, want.k_cache, cache.size(), "k cache");
  same(got.v_cache, want.v_cache, cache.size(), "v cache");
  // The two-op path did rotate and store: the cache changed where the new tokens went.
  EXPECT_NE(bits_of(download<BF16>(want.k_cache, cache.size())), bits_of(cache));
}

TEST_F(CudaTest, RopeStoreGivesTheBitsOfRopeThenStore) {
  check_rope_store(ctx(), {"decode, gqa d128", 2, 1, 32, 8, 128, 64, 37});
  check_rope_store(ctx(), {"decode, paged", 3, 1, 8, 2, 128, 32, 29, /*block_size=*/8});
  check_rope_store(ctx(), {"decode, index on device", 2, 1, 8, 2, 64, 16, 15, 4, true});
  check_rope_store(ctx(), {"chunk wraps the ring", 2, 5, 4, 2, 64, 8, 6});
  check_rope_store(ctx(), {"chunk longer than the ring", 1, 11, 4, 1, 128, 4, 9, 2});
  check_rope_store(ctx(), {"odd kv_dim", 2, 3, 3, 1, 6, 5, 2});
}

}  // namespace
}  // namespace mistral::cuda::testing
