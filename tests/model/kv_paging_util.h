// The paged-KV-cache check shared by the CPU (kv_paging_test.cc) and CUDA (cuda_model_test.cc)
// tests: a left-padded batch of 2 run with the default layout and with block tables of several
// block sizes, shuffled or moved row by row in pools larger than needed, must give logits bit for
// bit the same. Every pool starts poisoned (all bytes 0xFF: NaN in F32/BF16/F16 values and I8
// scales), so a read of a position nothing was written to shows in the logits; afterwards every
// written slot's vectors must be at the position its row's table gives, and blocks no table
// names must still hold the poison, so kernels that ignored the tables (reading and writing the
// default places) would fail too. Works on any backend: memory crosses through to_host/to_device.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "model/kv_cache.h"
#include "model/model.h"

namespace mistral::testing {

inline constexpr uint8_t kKvPoison = 0xFF;

// The pools of every layer as (pointer, bytes per position) pairs: keys, values, and for I8 the
// key and value scales.
inline std::vector<std::pair<const void*, size_t>> kv_pools(const Model& model,
                                                            const KvCache& cache) {
  const ModelConfig& c = model.config();
  const size_t vector =
      static_cast<size_t>(c.num_key_value_heads * c.head_dim) * dtype_size(cache.dtype());
  const size_t scales = static_cast<size_t>(c.num_key_value_heads) * sizeof(float);
  std::vector<std::pair<const void*, size_t>> out;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    out.push_back({cache.keys(l), vector});
    out.push_back({cache.values(l), vector});
    if (cache.dtype() == DType::kI8) {
      out.push_back({cache.key_scales(l), scales});
      out.push_back({cache.value_scales(l), scales});
    }
  }
  return out;
}

inline int64_t kv_positions(const KvCache& cache) {
  return cache.num_blocks() * cache.block_size();
}

inline void poison_kv_cache(Model& model, KvCache& cache) {
  for (const auto& [pool, bytes] : kv_pools(model, cache)) {
    const std::vector<uint8_t> garbage(bytes * kv_positions(cache), kKvPoison);
    model.backend().to_device(const_cast<void*>(pool), garbage.data(), garbage.size());
  }
}

// Every row's block table, [B, blocks_per_row], on the host.
inline std::vector<int32_t> kv_tables(const KvCache& cache) {
  std::vector<int32_t> all;
  for (int64_t b = 0; b < cache.batch(); ++b) {
    const std::vector<int32_t> row = cache.row_block_table(b);
    all.insert(all.end(), row.begin(), row.end());
  }
  return all;
}

// A prompt of `prompt` tokens (row 1 left-padded by 3), a second call of `chunk` tokens per row
// (none for 0), then `steps` decode steps of one token per row: the logits of every call, all
// positions.
inline std::vector<float> run_padded_batch(Model& model, KvCache& cache, int64_t prompt,
                                           int64_t chunk, int64_t steps) {
  const int64_t vocab = model.config().vocab_size;
  std::vector<int32_t> ids(2 * prompt);
  std::vector<uint8_t> mask(2 * prompt, 1);
  for (int64_t t = 0; t < prompt; ++t) {
    ids[t] = static_cast<int32_t>((4 * t + 1) % vocab);
    ids[prompt + t] = t < 3 ? 0 : static_cast<int32_t>((7 * t + 3) % vocab);
    mask[prompt + t] = t < 3 ? 0 : 1;
  }
  std::vector<float> logits;
  auto out = model.forward(ids, mask, 2, cache);
  if (chunk > 0 && out.ok()) {
    logits.insert(logits.end(), out->logits.begin(), out->logits.end());
    ids.resize(2 * chunk);
    for (int64_t i = 0; i < 2 * chunk; ++i) ids[i] = static_cast<int32_t>((11 * i + 5) % vocab);
    out = model.forward(ids, std::vector<uint8_t>(2 * chunk, 1), 2, cache);
  }
  for (int64_t step = 0; out.ok(); ++step) {
    logits.insert(logits.end(), out->logits.begin(), out->logits.end());
    if (step == steps) break;
    ids = {static_cast<int32_t>((3 * step + 2) % vocab),
           static_cast<int32_t>((5 * step + 7) % vocab)};
    out = model.forward(ids, std::vector<uint8_t>(2, 1), 2, cache);
  }
  EXPECT_TRUE(out.ok()) << out.status().message();
  return logits;
}

// Every written slot of `paged` holds, at the position its table gives, the bytes `reference`
// holds for the same slot; every block no table names still holds the poison.
inline void expect_placed_as_tabled(Model& model, const KvCache& paged, const KvCache& reference) {
  ASSERT_EQ(paged.capacity(), reference.capacity());
  std::vector<int64_t> seq(paged.capacity());
  model.backend().to_host(seq.data(), paged.slot_seq_index(), seq.size() * sizeof(int64_t));
  const std::vector<int32_t> paged_table = kv_tables(paged), ref_table = kv_tables(reference);
  const KvBlockTable paged_blocks{paged.block_size(), paged.blocks_per_row(), paged_table.data()};
  const KvBlockTable ref_blocks{reference.block_size(), reference.blocks_per_row(),
                                ref_table.data()};
  std::vector<bool> named(paged.num_blocks(), false);
  for (int32_t id : paged_table) named[id] = true;
  const auto paged_pools = kv_pools(model, paged), ref_pools = kv_pools(model, reference);
  for (size_t p = 0; p < paged_pools.size(); ++p) {
    const size_t bytes = paged_pools[p].second;
    std::vector<uint8_t> got(bytes * kv_positions(paged)), want(bytes * kv_positions(reference));
    model.backend().to_host(got.data(), paged_pools[p].first, got.size());
    model.backend().to_host(want.data(), ref_pools[p].first, want.size());
    int64_t written = 0;
    for (int64_t b = 0; b < paged.batch(); ++b) {
      for (int64_t s = 0; s < paged.capacity(); ++s) {
        if (seq[s] < 0) continue;
        ++written;
        const int64_t at = kv_cache_position(paged_blocks, paged.capacity(), b, s);
        const int64_t ref_at = kv_cache_position(ref_blocks, reference.capacity(), b, s);
        ASSERT_EQ(std::memcmp(&got[at * bytes], &want[ref_at * bytes], bytes), 0)
            << "pool " << p << " row " << b << " slot " << s << " (position " << at << ")";
      }
    }
    EXPECT_EQ(written, paged.batch() * paged.capacity()) << "the ring should be full";
    for (int64_t block = 0; block < paged.num_blocks(); ++block) {
      if (named[block]) continue;
      const auto begin = got.begin() + block * paged.block_size() * static_cast<int64_t>(bytes);
      const auto end = begin + paged.block_size() * static_cast<int64_t>(bytes);
      ASSERT_TRUE(std::all_of(begin, end, [](uint8_t x) { return x == kKvPoison; }))
          << "pool " << p << ": spare block " << block << " was written";
    }
  }
}

// The whole check for one model and storage type, run_padded_batch's calls into a cache of
// prompt + chunk + steps positions (the ring is full at the end).
inline void expect_paging_invisible(Model& model, DType dtype, int64_t prompt, int64_t chunk,
                                    int64_t steps) {
  const int64_t batch = 2, max_length = prompt + chunk + steps;
  auto reference = model.new_cache(batch, max_length, dtype);
  ASSERT_TRUE(reference.ok()) << reference.status().message();
  ASSERT_EQ(reference->block_size(), std::min(kDefaultKvBlockSize, reference->capacity()));
  ASSERT_EQ(reference->num_blocks(), batch * reference->blocks_per_row());
  ASSERT_EQ(kv_tables(*reference)[reference->blocks_per_row()], reference->blocks_per_row());
  poison_kv_cache(model, *reference);
  const std::vector<float> expected = run_padded_batch(model, *reference, prompt, chunk, steps);
  ASSERT_EQ(expected.size(), static_cast<size_t>(batch * max_length) *
                                 static_cast<size_t>(model.config().vocab_size));
  for (float x : expected) ASSERT_FALSE(std::isnan(x)) << "the default layout read the poison";

  // Tables set all at once from a shuffle of the pool, or row by row: row 0 moved to the top of
  // the pool (reversed), then row 1 into what row 0 left.
  enum class Arrange { kShuffledAtOnce, kRowByRow };
  struct Variant {
    int64_t block_size;
    Arrange arrange;
  };
  const Variant variants[] = {{1, Arrange::kShuffledAtOnce},
                              {3, Arrange::kShuffledAtOnce},
                              {16, Arrange::kShuffledAtOnce},
                              {3, Arrange::kRowByRow},
                              {kDefaultKvBlockSize, Arrange::kRowByRow}};
  std::mt19937 rng(5);
  for (const Variant& v : variants) {
    SCOPED_TRACE(::testing::Message()
                 << dtype_name(dtype) << " block_size " << v.block_size
                 << (v.arrange == Arrange::kRowByRow ? " row by row" : " shuffled"));
    const int64_t capacity = reference->capacity();
    const int64_t per_row = (capacity + v.block_size - 1) / v.block_size;
    KvCacheLayout layout;
    layout.block_size = v.block_size;
    layout.num_blocks = v.arrange == Arrange::kRowByRow ? 3 * per_row : batch * per_row + 3;
    auto cache = model.new_cache(batch, max_length, dtype, layout);
    ASSERT_TRUE(cache.ok()) << cache.status().message();
    ASSERT_EQ(cache->blocks_per_row(), per_row);
    ASSERT_EQ(cache->bytes(), KvCache::bytes_per_position(model.config(), dtype) *
                                  static_cast<uint64_t>(layout.num_blocks * v.block_size));
    if (v.arrange == Arrange::kShuffledAtOnce) {
      std::vector<int32_t> pool(layout.num_blocks);
      std::iota(pool.begin(), pool.end(), 0);
      std::shuffle(pool.begin(), pool.end(), rng);
      pool.resize(batch * per_row);
      const Status set = cache->set_block_tables(pool);
      ASSERT_TRUE(set.ok()) << set.message();
    } else {
      std::vector<int32_t> row0(per_row), row1(per_row);
      for (int64_t i = 0; i < per_row; ++i) row0[i] = static_cast<int32_t>(3 * per_row - 1 - i);
      std::iota(row1.begin(), row1.end(), 0);
      std::shuffle(row1.begin(), row1.end(), rng);
      const Status moved0 = cache->set_block_table(0, row0);
      ASSERT_TRUE(moved0.ok()) << moved0.message();
      const Status moved1 = cache->set_block_table(1, row1);
      ASSERT_TRUE(moved1.ok()) << moved1.message();
      ASSERT_EQ(cache->row_block_table(0), row0);
      ASSERT_EQ(cache->row_block_table(1), row1);
    }
    poison_kv_cache(model, *cache);
    const std::vector<float> got = run_padded_batch(model, *cache, prompt, chunk, steps);
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(std::memcmp(&got[i], &expected[i], sizeof(float)), 0)
          << "logit " << i << ": " << got[i] << " vs " << expected[i];
    }
    expect_placed_as_tabled(model, *cache, *reference);
  }
}

}  // namespace mistral::testing
