// Decode attention, flash-decoding style: the virtual key list of each (batch row, kv head) is cut
// into splits, one block per split, so that even one sequence fills the GPU. A block's 4 warps
// take keys in turn; each lane holds head_dim / 32 elements of every query row (the rows are the
// T x group queries that share the kv head) and of the key and value. A score is a warp-wide sum;
// each warp keeps a float32 online softmax per row, the block merges its warps, and a second
// kernel merges the splits (skipped when there is one split).
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/kernel_launch.h"
#include "backend/cuda/kernels.h"
#include "core/env.h"

namespace mistral::cuda {
namespace {

using namespace device;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
// Splits: enough for kBlocksPerSm blocks per SM over all (row, kv head) pairs, each of at least
// kMinKeysPerSplit keys. On an H200 (7B, decode at 640 and 4,096 keys) 4 blocks and 16 keys beat 2
// and 32 by 3% and 12% end to end; 8 and 8, 16 and 4 or 4 and 8 were no better (bench/RESULTS.md).
// MISTRAL_ATTN_BLOCKS_PER_SM and MISTRAL_ATTN_MIN_KEYS override them (for benchmarks).
constexpr int kMinKeysPerSplit = 16;
constexpr int kBlocksPerSm = 4;
constexpr int kKeysInFlight = 8;  // per warp

struct Split {
  int splits;
  int64_t keys_per_split;
};

Split plan_splits(const KernelContext& ctx, const AttentionParams& p) {
  static const int64_t min_keys = std::max(1, env_int("MISTRAL_ATTN_MIN_KEYS", kMinKeysPerSplit));
  static const int64_t blocks_per_sm =
      std::max(1, env_int("MISTRAL_ATTN_BLOCKS_PER_SM", kBlocksPerSm));
  const int64_t keys = p.capacity + p.new_tokens;
  const int64_t heads = p.batch * p.num_kv_heads;
  int64_t splits = (blocks_per_sm * ctx.num_sms() + heads - 1) / heads;
  splits = std::clamp<int64_t>(splits, 1, std::max<int64_t>(1, keys / min_keys));
  splits = std::min<int64_t>(splits, 1024);
  const int64_t per = (keys + splits - 1) / splits;
  return {static_cast<int>((keys + per - 1) / per), per};
}

// E bf16 (E = 2 or 4: 4 or 8 bytes) as loaded, and as float.
template <int E>
using RawRow = std::conditional_t<E == 4, uint2, uint32_t>;
template <int E>
__device__ __forceinline__ RawRow<E> load_raw(const bf16* p) {
  return *reinterpret_cast<const RawRow<E>*>(p);
}
template <int E>
__device__ __forceinline__ void to_floats(RawRow<E> raw, float (&f)[E]) {
  if constexpr (E == 4) {
    const float2 a = __bfloat1622float2(as_bf162(raw.x)), b = __bfloat1622float2(as_bf162(raw.y));
    f[0] = a.x;
    f[1] = a.y;
    f[2] = b.x;
    f[3] = b.y;
  } else {
    const float2 a = __bfloat1622float2(as_bf162(raw));
    f[0] = a.x;
    f[1] = a.y;
  }
}
template <int E>
__device__ __forceinline__ void load_row(const bf16* p, float (&f)[E]) {
  to_floats<E>(load_raw<E>(p), f);
}

// R: the largest row count this instance takes (rows = T * group <= R).
template <int D, int R>
__global__ void __launch_bounds__(kThreads)
    attention_decode_kernel(AttentionParams p, float scale_log2, int64_t keys_per_split,
                            float* __restrict__ part_acc, float* __restrict__ part_ml) {
  device::begin_after_prior_kernels();
  if (p.first_seq_index_device != nullptr) p.first_seq_index = *p.first_seq_index_device;
  constexpr int E = D / 32;
  const int64_t b = blockIdx.z, kvh = blockIdx.y;
  const int split = blockIdx.x, splits = gridDim.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t group = p.num_heads / p.num_kv_heads;
  const int rows = static_cast<int>(p.new_tokens * group);

  float q[R][E], acc[R][E], row_max[R], row_sum[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    row_max[r] = -INFINITY;
    row_sum[r] = 0.0f;
#pragma unroll
    for (int e = 0; e < E; ++e) q[r][e] = acc[r][e] = 0.0f;
    if (r < rows) {
      const int64_t tq = r / group, h = kvh * group + r % group;
      load_row<E>(p.q + ((b * p.new_tokens + tq) * p.num_heads + h) * D + lane * E, q[r]);
    }
  }

  const int64_t begin = split * keys_per_split;
  const int64_t end = std::min(begin + keys_per_split, p.capacity + p.new_tokens);
  // A warp takes keys begin + warp, + kWarps, ... in that order, kKeysInFlight at a time: the
  // slot, table, key and value loads of all of them are issued before the first is used (one key
  // at a time, each key was two dependent trips to memory, 22 us per layer at 640 keys on an
  // H200). Every slot of the pool is a valid address, so the loads do not wait for validity.
  for (int64_t j0 = begin + warp; j0 < end; j0 += kWarps * kKeysInFlight) {
    RawRow<E> k_raw[kKeysInFlight], v_raw[kKeysInFlight];
    int64_t seq[kKeysInFlight];
#pragma unroll
    for (int u = 0; u < kKeysInFlight; ++u) {
      const int64_t j = j0 + int64_t(u) * kWarps;
      seq[u] = -1;
      if (j < end) {
        const bf16 *k_src, *v_src;
        seq[u] = key_at(p, b, kvh, j, &k_src, &v_src);
        k_raw[u] = load_raw<E>(k_src + lane * E);
        v_raw[u] = load_raw<E>(v_src + lane * E);
      }
    }
#pragma unroll
    for (int u = 0; u < kKeysInFlight; ++u) {
      if (seq[u] < 0) continue;  // uniform across the warp
      float k[E], v[E];
      to_floats<E>(k_raw[u], k);
      to_floats<E>(v_raw[u], v);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r >= rows || !visible(p.first_seq_index + r / group, seq[u], p.sliding_window)) {
          continue;
        }
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < E; ++e) dot = fmaf(q[r][e], k[e], dot);
        const float s = warp_sum(dot) * scale_log2;
        const float new_max = fmaxf(row_max[r], s);
        const float alpha = exp2f(row_max[r] - new_max), w = exp2f(s - new_max);
        row_max[r] = new_max;
        row_sum[r] = row_sum[r] * alpha + w;
#pragma unroll
        for (int e = 0; e < E; ++e) acc[r][e] = fmaf(w, v[e], acc[r][e] * alpha);
      }
    }
  }

  // Merge the warps: per row, rescale each warp's sums to the common max.
  __shared__ float s_max[kWarps][R], s_sum[kWarps][R];
  __shared__ float s_acc[kWarps][R][D];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (lane == 0) {
      s_max[warp][r] = row_max[r];
      s_sum[warp][r] = row_sum[r];
    }
#pragma unroll
    for (int e = 0; e < E; ++e) s_acc[warp][r][lane * E + e] = acc[r][e];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < rows * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    float m = -INFINITY;
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, s_max[w][r]);
    float l = 0.0f, a = 0.0f;
    if (m != -INFINITY) {
      for (int w = 0; w < kWarps; ++w) {
        const float f = exp2f(s_max[w][r] - m);
        l += s_sum[w][r] * f;
        a += s_acc[w][r][d] * f;
      }
    }
    if (splits == 1) {
      const int64_t tq = r / group, h = kvh * group + r % group;
      p.out[((b * p.new_tokens + tq) * p.num_heads + h) * D + d] =
          __float2bfloat16_rn(l > 0.0f ? a / l : 0.0f);
    } else {
      const int64_t slot = ((b * p.num_kv_heads + kvh) * splits + split) * rows + r;
      part_acc[slot * D + d] = a;
      if (d == 0) {
        part_ml[2 * slot] = m;
        part_ml[2 * slot + 1] = l;
      }
    }
  }
}

// One block of D threads per (batch row, kv head, query row): merges the splits' partial sums.
template <int D>
__global__ void attention_merge_kernel(AttentionParams p, int splits, int rows,
                                       const float* __restrict__ part_acc,
                                       const float* __restrict__ part_ml) {
  device::begin_after_prior_kernels();
  const int64_t idx = blockIdx.x;  // (b * kv_heads + kvh) * rows + r
  const int r = static_cast<int>(idx % rows);
  const int64_t bk = idx / rows, kvh = bk % p.num_kv_heads, b = bk / p.num_kv_heads;
  const int d = threadIdx.x;
  float m = -INFINITY;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, part_ml[2 * ((bk * splits + s) * rows + r)]);
  float l = 0.0f, a = 0.0f;
  if (m != -INFINITY) {
    for (int s = 0; s < splits; ++s) {
      const int64_t slot = (bk * splits + s) * rows + r;
      const float f = exp2f(part_ml[2 * slot] - m);
      l += part_ml[2 * slot + 1] * f;
      a += part_acc[slot * D + d] * f;
    }
  }
  const int64_t group = p.num_heads / p.num_kv_heads;
  const int64_t tq = r / group, h = kvh * group + r % group;
  p.out[((b * p.new_tokens + tq) * p.num_heads + h) * D + d] =
      __float2bfloat16_rn(l > 0.0f ? a / l : 0.0f);
}

template <int D, int R>
void launch_decode(KernelContext& ctx, const AttentionParams& p, const Split& sp, float* part_acc,
                   float* part_ml) {
  const dim3 grid(static_cast<unsigned>(sp.splits), static_cast<unsigned>(p.num_kv_heads),
                  static_cast<unsigned>(p.batch));
  launch_kernel(ctx, attention_decode_kernel<D, R>, grid, kThreads, 0, p, p.scale * kLog2e,
                sp.keys_per_split, part_acc, part_ml);
  MISTRAL_CUDA_CHECK_LAUNCH();
}

template <int D>
void decode_for_dim(KernelContext& ctx, const AttentionParams& p, const Split& sp, int rows,
                    float* part_acc, float* part_ml) {
  if (rows <= 1) {
    launch_decode<D, 1>(ctx, p, sp, part_acc, part_ml);
  } else if (rows <= 4) {
    launch_decode<D, 4>(ctx, p, sp, part_acc, part_ml);
  } else if (rows <= 8) {
    launch_decode<D, 8>(ctx, p, sp, part_acc, part_ml);
  } else {
    launch_decode<D, 16>(ctx, p, sp, part_acc, part_ml);
  }
  if (sp.splits > 1) {
    const auto blocks = static_cast<unsigned>(p.batch * p.num_kv_heads * rows);
    launch_kernel(ctx, attention_merge_kernel<D>, blocks, D, 0, p, sp.splits, rows, part_acc,
                  part_ml);
    MISTRAL_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

size_t attention_decode_scratch_bytes(const KernelContext& ctx, const AttentionParams& p) {
  const Split sp = plan_splits(ctx, p);
  if (sp.splits == 1) return 0;
  const int64_t rows = p.new_tokens * (p.num_heads / p.num_kv_heads);
  return static_cast<size_t>(p.batch * p.num_kv_heads * sp.splits * rows * (p.head_dim + 2)) *
         sizeof(float);
}

void attention_decode(KernelContext& ctx, const AttentionParams& p) {
  check_attention_params(p);
  const int64_t rows = p.new_tokens * (p.num_heads / p.num_kv_heads);
  MISTRAL_CHECK(rows <= kMaxDecodeRows)
      << "decode attention takes new_tokens * group <= " << kMaxDecodeRows << ", got " << rows;
  const Split sp = plan_splits(ctx, p);
  const size_t need = attention_decode_scratch_bytes(ctx, p);
  MISTRAL_CHECK(ctx.scratch_bytes() >= need)
      << "decode attention needs " << need << " bytes of scratch; call reserve_scratch first";
  float* part_acc = static_cast<float*>(ctx.scratch());
  float* part_ml =
      part_acc + static_cast<size_t>(p.batch * p.num_kv_heads * sp.splits * rows) * p.head_dim;
  if (p.head_dim == 128) {
    decode_for_dim<128>(ctx, p, sp, static_cast<int>(rows), part_acc, part_ml);
  } else {
    decode_for_dim<64>(ctx, p, sp, static_cast<int>(rows), part_acc, part_ml);
  }
}

}  // namespace mistral::cuda
