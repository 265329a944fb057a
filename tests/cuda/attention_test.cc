// Prefill (flash) and decode (split-K) attention against a double-precision reference of
// backend.h's mask: causal, padding (per-slot and per-token valid flags), sliding window, over a
// ring cache whose slots hold sequence indices in ring order, plus this call's keys.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.h"

namespace mistral::cuda::testing {
namespace {

struct Case {
  std::string name;
  int64_t batch, tokens, heads, kv_heads, head_dim;
  int64_t first = 0;        // sequence index of the first new token
  int64_t window = 0;       // sliding window, 0: none
  int64_t capacity = 0;     // ring slots
  int64_t pad_row1 = 0;     // row 1 (if any) is left-padded over sequence indices < pad_row1
  bool empty_row0 = false;  // row 0 sees nothing: every cache slot and new token is padding
};

struct Data {
  AttentionParams p;
  std::vector<float> q, k, v, kc, vc;  // bf16-held values
  std::vector<int64_t> slot_seq;
  std::vector<uint8_t> slot_valid, new_valid;
  DeviceBuffer dq, dk, dv, dkc, dvc, dslot_seq, dslot_valid, dnew_valid, dout;
};

Data make_data(const Case& c, uint32_t seed) {
  Data d;
  const int64_t kv = c.kv_heads * c.head_dim;
  d.dq = upload(to_bf16(randn(c.batch * c.tokens * c.heads * c.head_dim, seed), &d.q));
  d.dk = upload(to_bf16(randn(c.batch * c.tokens * kv, seed + 1), &d.k));
  d.dv = upload(to_bf16(randn(c.batch * c.tokens * kv, seed + 2), &d.v));
  d.dkc = upload(to_bf16(randn(c.batch * c.capacity * kv, seed + 3), &d.kc));
  d.dvc = upload(to_bf16(randn(c.batch * c.capacity * kv, seed + 4), &d.vc));
  // The ring holds the latest `capacity` sequence indices before `first`, slot = seq % capacity.
  d.slot_seq.assign(c.capacity, -1);
  for (int64_t s = std::max<int64_t>(0, c.first - c.capacity); s < c.first; ++s) {
    d.slot_seq[s % c.capacity] = s;
  }
  d.slot_valid.assign(c.batch * c.capacity, 1);
  d.new_valid.assign(c.batch * c.tokens, 1);
  for (int64_t b = 0; b < c.batch; ++b) {
    const int64_t pad = (b == 1) ? c.pad_row1 : 0;
    for (int64_t s = 0; s < c.capacity; ++s) {
      if ((d.slot_seq[s] >= 0 && d.slot_seq[s] < pad) || (b == 0 && c.empty_row0)) {
        d.slot_valid[b * c.capacity + s] = 0;
      }
    }
    for (int64_t t = 0; t < c.tokens; ++t) {
      if (c.first + t < pad || (b == 0 && c.empty_row0)) d.new_valid[b * c.tokens + t] = 0;
    }
  }
  d.dslot_seq = upload(d.slot_seq);
  d.dslot_valid = upload(d.slot_valid);
  d.dnew_valid = upload(d.new_valid);
  AttentionParams& p = d.p;
  p.batch = c.batch;
  p.new_tokens = c.tokens;
  p.num_heads = c.heads;
  p.num_kv_heads = c.kv_heads;
  p.head_dim = c.head_dim;
  p.first_seq_index = c.first;
  p.sliding_window = c.window;
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  p.q = d.dq.as<bf16>();
  p.k = d.dk.as<bf16>();
  p.v = d.dv.as<bf16>();
  p.new_valid = d.dnew_valid.as<uint8_t>();
  p.capacity = c.capacity;
  p.k_cache = d.dkc.as<bf16>();
  p.v_cache = d.dvc.as<bf16>();
  p.slot_seq_index = d.dslot_seq.as<int64_t>();
  p.slot_valid = d.dslot_valid.as<uint8_t>();
  return d;
}

// out and, per element, mag = sum_j p_j |v_j[d]| (the scale of bf16 rounding error in P and V).
void reference(const Case& c, const Data& d, std::vector<double>* out, std::vector<double>* mag) {
  const int64_t hd = c.head_dim, group = c.heads / c.kv_heads;
  out->assign(c.batch * c.tokens * c.heads * hd, 0.0);
  mag->assign(out->size(), 0.0);
  auto visible = [&](int64_t q, int64_t k) {
    return k >= 0 && k <= q && (c.window <= 0 || q - k < c.window);
  };
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t h = 0; h < c.heads; ++h) {
      const int64_t kvh = h / group;
      for (int64_t t = 0; t < c.tokens; ++t) {
        const float* q = &d.q[((b * c.tokens + t) * c.heads + h) * hd];
        const int64_t q_seq = c.first + t;
        std::vector<double> scores;
        std::vector<const float*> values;
        auto consider = [&](const float* k, const float* v) {
          double s = 0;
          for (int64_t i = 0; i < hd; ++i) s += double(q[i]) * k[i];
          scores.push_back(s / std::sqrt(double(hd)));
          values.push_back(v);
        };
        for (int64_t s = 0; s < c.capacity; ++s) {
          if (!d.slot_valid[b * c.capacity + s] || !visible(q_seq, d.slot_seq[s])) continue;
          const int64_t off = ((b * c.capacity + s) * c.kv_heads + kvh) * hd;
          consider(&d.kc[off], &d.vc[off]);
        }
        for (int64_t j = 0; j < c.tokens; ++j) {
          if (!d.new_valid[b * c.tokens + j] || !visible(q_seq, c.first + j)) continue;
          const int64_t off = ((b * c.tokens + j) * c.kv_heads + kvh) * hd;
          consider(&d.k[off], &d.v[off]);
        }
        if (scores.empty()) continue;  // no visible key: zeros
        const double mx = *std::max_element(scores.begin(), scores.end());
        double sum = 0;
        for (double& s : scores) sum += (s = std::exp(s - mx));
        double* o = &(*out)[((b * c.tokens + t) * c.heads + h) * hd];
        double* m = &(*mag)[((b * c.tokens + t) * c.heads + h) * hd];
        for (size_t j = 0; j < scores.size(); ++j) {
          for (int64_t i = 0; i < hd; ++i) {
            o[i] += scores[j] / sum * values[j][i];
            m[i] += scores[j] / sum * std::fabs(values[j][i]);
          }
        }
      }
    }
  }
}

enum class Kernel { kPrefill, kDecode, kDispatch };

void run_and_check(KernelContext& ctx, const Case& c, Kernel kernel) {
  SCOPED_TRACE(c.name + (kernel == Kernel::kPrefill  ? " [prefill]"
                         : kernel == Kernel::kDecode ? " [decode]"
                                                     : " [dispatch]"));
  Data d = make_data(c, 17 + static_cast<uint32_t>(c.tokens * 31 + c.capacity));
  const size_t n = c.batch * c.tokens * c.heads * c.head_dim;
  d.dout = poisoned(n * sizeof(bf16));
  d.p.out = d.dout.as<bf16>();
  ASSERT_TRUE(ctx.reserve_scratch(attention_decode_scratch_bytes(ctx, d.p)).ok());
  switch (kernel) {
    case Kernel::kPrefill:
      attention_prefill(ctx, d.p);
      break;
    case Kernel::kDecode:
      attention_decode(ctx, d.p);
      break;
    case Kernel::kDispatch:
      attention(ctx, d.p);
      break;
  }
  const std::vector<BF16> got = download<BF16>(d.dout, n);
  std::vector<double> ref, mag;
  reference(c, d, &ref, &mag);
  for (size_t i = 0; i < n; ++i) {
    const float y = bf16_to_float(got[i]);
    ASSERT_TRUE(std::isfinite(y)) << "element " << i << " not written";
    // bf16 P (prefill) and the bf16 output each round by at most 2^-9 relative: 4e-3 of the
    // weighted |v| plus 4e-3 of the result leave a factor 2 of margin over float32 noise.
    ASSERT_NEAR(y, ref[i], 4e-3 * (mag[i] + std::fabs(ref[i])) + 1e-5) << "element " << i;
  }
}

// Every case through prefill and the dispatcher, and through decode when it fits.
void check(KernelContext& ctx, const Case& c) {
  run_and_check(ctx, c, Kernel::kPrefill);
  if (c.tokens * (c.heads / c.kv_heads) <= kMaxDecodeRows) run_and_check(ctx, c, Kernel::kDecode);
  run_and_check(ctx, c, Kernel::kDispatch);
}

TEST_F(CudaTest, AttentionEmptyCacheCausalGqa) {
  check(ctx(), {"gqa d128", 2, 37, 8, 2, 128});
  check(ctx(), {"gqa d64", 2, 37, 8, 2, 64});
  check(ctx(), {"mha", 1, 70, 4, 4, 128});
  check(ctx(), {"group 8", 1, 9, 16, 2, 128});
}

TEST_F(CudaTest, AttentionLeftPaddingAndRowsWithNoVisibleKey) {
  check(ctx(), {"left pad", 2, 40, 8, 2, 128, 0, 0, 0, /*pad_row1=*/13});
  Case none{"row 0 all padding", 2, 5, 4, 1, 64, 10, 0, 16, 0, /*empty_row0=*/true};
  check(ctx(), none);
}

TEST_F(CudaTest, AttentionSlidingWindowInsideOneCall) {
  check(ctx(), {"window 7", 2, 50, 8, 2, 128, 0, 7});
  check(ctx(), {"window 100, long", 1, 300, 8, 2, 128, 0, 100});
}

TEST_F(CudaTest, AttentionRingCacheChunkedPrefill) {
  // The ring holds the last 24 positions before 40 (slots in ring order), window 24.
  check(ctx(), {"ring chunk", 2, 5, 8, 2, 128, 40, 24, 24, /*pad_row1=*/20});
  check(ctx(), {"ring chunk no window", 2, 70, 8, 2, 64, 40, 0, 48, /*pad_row1=*/3});
}

TEST_F(CudaTest, AttentionDecodeLongCacheSplits) {
  // Decode steps far past the window with many splits (merged by the second kernel).
  check(ctx(), {"decode window", 2, 1, 32, 8, 128, 5000, 4096, 4096, /*pad_row1=*/100});
  check(ctx(), {"decode no window", 1, 1, 8, 2, 128, 1000, 0, 1500});
  check(ctx(), {"decode 2 tokens group 8", 2, 2, 16, 2, 64, 700, 300, 300});
  check(ctx(), {"decode mha", 3, 1, 4, 4, 128, 90, 0, 128, /*pad_row1=*/50});
  check(ctx(), {"decode 2 tokens gqa", 1, 2, 8, 2, 64, 33, 0, 40});
}

TEST_F(CudaTest, AttentionDecodeSplitsMergedInTheKernelOrByTheMergeKernel) {
  // The splits of a (row, kv head) merged in the kernel through a thread block cluster's shared
  // memory (sm_90, up to 16 blocks: 11 for the 7B shape at 640 positions, 10 for group 8) and,
  // with MISTRAL_ATTN_CLUSTER=0, by the second kernel from global scratch.
  const std::vector<Case> cases = {
      {"decode 7b at 640 positions", 1, 1, 32, 8, 128, 640, 4096, 640},
      {"decode 7b, 100 slots, left pad", 2, 1, 32, 8, 128, 70, 0, 100, /*pad_row1=*/30},
      {"decode 2 tokens group 8", 2, 2, 16, 2, 64, 700, 300, 300},
      {"decode mha", 3, 1, 4, 4, 128, 90, 0, 128, /*pad_row1=*/50},
  };
  const bool clusters = ctx().props().major >= 9;
  for (const char* cluster : {"1", "0"}) {
    setenv("MISTRAL_ATTN_CLUSTER", cluster, 1);
    SCOPED_TRACE(std::string("MISTRAL_ATTN_CLUSTER=") + cluster);
    for (const Case& c : cases) run_and_check(ctx(), c, Kernel::kDecode);
    // The 7B shape takes the in-kernel merge (no scratch) exactly when clusters are on.
    const Data d = make_data(cases[0], 1);
    const bool in_kernel = attention_decode_scratch_bytes(ctx(), d.p) == 0;
    EXPECT_EQ(in_kernel, clusters && cluster[0] == '1');
  }
  unsetenv("MISTRAL_ATTN_CLUSTER");
}

// attention_decode_rope_store (rope and the cache write inside decode attention) against
// rope_qk_store_kv then attention_decode: the same bits in the output and in both caches (q and k
// stay unrotated in memory on the fused path, so each run starts from fresh copies).
void check_rope_store(KernelContext& ctx, const Case& c, int64_t block_size = 0,
                      bool index_on_device = false) {
  SCOPED_TRACE(c.name + (block_size > 0 ? " [paged]" : "") +
               (index_on_device ? " [index on device]" : ""));
  const uint32_t seed = 5 + static_cast<uint32_t>(c.capacity);
  const int64_t blocks_per_row = block_size > 0 ? c.capacity / block_size : 0;
  std::vector<int32_t> table(c.batch * blocks_per_row);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(seed));
  std::vector<int64_t> positions(c.batch);
  for (int64_t b = 0; b < c.batch; ++b) positions[b] = c.first + 7 * b;
  std::vector<float> inv_freq(c.head_dim / 2);
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    inv_freq[i] = static_cast<float>(std::pow(1e6, -2.0 * i / c.head_dim));
  }
  DeviceBuffer dtable = upload(table), dpos = upload(positions), dinv = upload(inv_freq);
  DeviceBuffer dindex = upload(std::vector<int64_t>{c.first});
  const size_t n = c.batch * c.heads * c.head_dim;
  const size_t cache_n = c.batch * c.capacity * c.kv_heads * c.head_dim;
  struct Run {
    std::vector<BF16> out, k_cache, v_cache;
  };
  auto run = [&](bool fused) {
    Data d = make_data(c, seed);
    d.dout = poisoned(n * sizeof(bf16));
    AttentionParams& p = d.p;
    p.out = d.dout.as<bf16>();
    if (block_size > 0) {
      p.block_size = block_size;
      p.blocks_per_row = blocks_per_row;
      p.block_table = dtable.as<int32_t>();
    }
    if (index_on_device) {
      p.first_seq_index = -1;
      p.first_seq_index_device = dindex.as<int64_t>();
    }
    EXPECT_TRUE(ctx.reserve_scratch(attention_decode_scratch_bytes(ctx, p)).ok());
    if (fused) {
      EXPECT_TRUE(attention_decode_rope_supported(p));
      DecodeRope r;
      r.positions = dpos.as<int64_t>();
      r.inv_freq = dinv.as<float>();
      r.k_cache = d.dkc.as<bf16>();
      r.v_cache = d.dvc.as<bf16>();
      attention_decode_rope_store(ctx, p, r);
    } else {
      KvStoreParams s;
      s.batch = c.batch;
      s.new_tokens = c.tokens;
      s.num_kv_heads = c.kv_heads;
      s.head_dim = c.head_dim;
      s.capacity = c.capacity;
      s.block_size = p.block_size;
      s.blocks_per_row = p.blocks_per_row;
      s.block_table = p.block_table;
      s.first_seq_index = p.first_seq_index;
      s.first_seq_index_device = p.first_seq_index_device;
      s.k = d.dk.as<bf16>();
      s.v = d.dv.as<bf16>();
      s.k_cache = d.dkc.as<bf16>();
      s.v_cache = d.dvc.as<bf16>();
      rope_qk_store_kv(ctx, d.dq.as<bf16>(), c.heads, dpos.as<int64_t>(), dinv.as<float>(), s);
      attention_decode(ctx, p);
    }
    return Run{download<BF16>(d.dout, n), download<BF16>(d.dkc, cache_n),
               download<BF16>(d.dvc, cache_n)};
  };
  const Run want = run(false), got = run(true);
  auto bits = [](const std::vector<BF16>& v) {
    std::vector<uint16_t> b(v.size());
    for (size_t i = 0; i < v.size(); ++i) b[i] = v[i].bits;
    return b;
  };
  for (const BF16& y : want.out) ASSERT_TRUE(std::isfinite(bf16_to_float(y)));
  EXPECT_EQ(bits(got.out), bits(want.out)) << "attention output";
  EXPECT_EQ(bits(got.k_cache), bits(want.k_cache)) << "k cache";
  EXPECT_EQ(bits(got.v_cache), bits(want.v_cache)) << "v cache";
}

TEST_F(CudaTest, AttentionDecodeWithRopeAndCacheWriteGivesTheBitsOfTheSeparateOps) {
  // The 7B shape (cluster merge at 641 keys, the merge kernel at 4,097 with a window), a ring
  // past its first lap, left padding, group 8 and 1, paging and the index on the device. As in
  // the model, the slot the new token goes to is empty or one window back (KvCache::write_args):
  // the ring holds exactly the window once it wraps.
  for (const char* cluster : {"1", "0"}) {
    setenv("MISTRAL_ATTN_CLUSTER", cluster, 1);
    SCOPED_TRACE(std::string("MISTRAL_ATTN_CLUSTER=") + cluster);
    check_rope_store(ctx(), {"7b at 640 positions", 1, 1, 32, 8, 128, 639, 4096, 640});
    check_rope_store(ctx(), {"7b past the window", 2, 1, 32, 8, 128, 5000, 4096, 4096, 100});
    check_rope_store(ctx(), {"left pad", 2, 1, 32, 8, 128, 70, 0, 100, /*pad_row1=*/30});
    check_rope_store(ctx(), {"group 8, ring", 2, 1, 16, 2, 128, 333, 96, 96});
    check_rope_store(ctx(), {"mha", 3, 1, 4, 4, 128, 90, 0, 128, /*pad_row1=*/50});
    check_rope_store(ctx(), {"paged ring", 3, 1, 8, 2, 128, 150, 128, 128}, /*block_size=*/16);
    check_rope_store(ctx(), {"first token", 1, 1, 8, 2, 128, 0, 0, 32}, 8, true);
  }
  unsetenv("MISTRAL_ATTN_CLUSTER");
  // Not for T > 1 or head_dim 64 (the caller runs the two ops).
  AttentionParams p = make_data({"", 1, 2, 8, 2, 128, 10, 0, 32}, 1).p;
  EXPECT_FALSE(attention_decode_rope_supported(p));
  p = make_data({"", 1, 1, 8, 2, 64, 10, 0, 32}, 1).p;
  EXPECT_FALSE(attention_decode_rope_supported(p));
}

}  // namespace
}  // namespace mistral::cuda::testing
