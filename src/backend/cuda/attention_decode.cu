// Decode attention, flash-decoding style: the virtual key list of each (batch row, kv head) is cut
// into splits, one block per split, so that even one sequence fills the GPU, and a second kernel
// merges the splits (skipped when there is one split). The rows of a block are the T x group
// queries that share the kv head. A block walks its split in chunks of 32 keys, in three phases:
//  1. scores: a group of 8 lanes per key (each lane 8 or 16 of its elements; the queries from
//     shared memory), summed by three xor-shuffles, written to shared memory (-inf if masked);
//  2. softmax: a warp per row takes the chunk's 32 scores, updates the row's running max and sum
//     (float32, base 2) and turns the scores into weights exp2(s - max);
//  3. values: a warp per key in turn, each lane holding head_dim / 32 elements of every row's
//     output, rescaled once per chunk.
// The key and value loads of a chunk go out together, before the scores are computed. Against a
// warp per key with a warp-wide sum and an online softmax per key (the kernel before), a key
// costs a few shuffles instead of five per row, and the exponentials are per key and row once.
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
constexpr int kGroupLanes = 8;                          // lanes per key in the score phase
constexpr int kKeysAtOnce = kWarps * 32 / kGroupLanes;  // keys a block scores at once (16)
constexpr int kChunk = 32;                              // keys per chunk: a warp's lanes
constexpr int kScoreRounds = kChunk / kKeysAtOnce;      // keys per lane group and chunk
constexpr int kValueKeys = kChunk / kWarps;             // keys per warp and chunk
static_assert(kChunk == 32 && kScoreRounds * kKeysAtOnce == kChunk);
// Splits: enough for kBlocksPerSm blocks per SM over all (row, kv head) pairs, each of at least
// kMinKeysPerSplit keys and of whole chunks (MISTRAL_ATTN_BLOCKS_PER_SM and MISTRAL_ATTN_MIN_KEYS
// override the two, for benchmarks). On an H100 (7B, 4,096 positions) 4 and 32 were as fast as 4
// and 16 and 3% faster than 2 and 64 (bench/RESULTS.md). Whole chunks: a decode step sees the
// cache plus one new key (641 at 640 positions), and splits of 33 keys walked a second chunk, with
// its loads, barriers and softmax, for one key; splits of 32 take one.
constexpr int kMinKeysPerSplit = 32;
constexpr int kBlocksPerSm = 4;

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
  const int64_t most_splits =
      std::clamp<int64_t>((blocks_per_sm * ctx.num_sms() + heads - 1) / heads, 1, 1024);
  int64_t per = std::max(min_keys, (keys + most_splits - 1) / most_splits);
  per = (per + kChunk - 1) / kChunk * kChunk;
  return {static_cast<int>((keys + per - 1) / per), per};
}

// E bf16 (E = 2, 4 or 8: 4, 8 or 16 bytes) as loaded, and as float.
template <int E>
using RawValue = std::conditional_t<E == 8, uint4, std::conditional_t<E == 4, uint2, uint32_t>>;
template <int E>
__device__ __forceinline__ void to_floats(RawValue<E> raw, float (&f)[E]) {
  uint32_t words[E / 2];
  if constexpr (E == 8) {
    words[0] = raw.x, words[1] = raw.y, words[2] = raw.z, words[3] = raw.w;
  } else if constexpr (E == 4) {
    words[0] = raw.x, words[1] = raw.y;
  } else {
    words[0] = raw;
  }
#pragma unroll
  for (int i = 0; i < E / 2; ++i) {
    const float2 pair = __bfloat1622float2(as_bf162(words[i]));
    f[2 * i] = pair.x;
    f[2 * i + 1] = pair.y;
  }
}

// acc + the products of 8 bf16 of a key and 8 floats of a query row (shared memory).
__device__ __forceinline__ float dot8(uint4 k_raw, const float* q, float acc) {
  float k[8];
  to_floats<8>(k_raw, k);
  const float4 q0 = *reinterpret_cast<const float4*>(q);
  const float4 q1 = *reinterpret_cast<const float4*>(q + 4);
  acc = fmaf(q0.x, k[0], acc);
  acc = fmaf(q0.y, k[1], acc);
  acc = fmaf(q0.z, k[2], acc);
  acc = fmaf(q0.w, k[3], acc);
  acc = fmaf(q1.x, k[4], acc);
  acc = fmaf(q1.y, k[5], acc);
  acc = fmaf(q1.z, k[6], acc);
  return fmaf(q1.w, k[7], acc);
}

// R: the largest row count this instance takes (rows = T * group <= R).
template <int D, int R>
__global__ void __launch_bounds__(kThreads)
    attention_decode_kernel(AttentionParams p, float scale_log2, int64_t keys_per_split,
                            float* __restrict__ part_acc, float* __restrict__ part_ml) {
  constexpr int E = D / 32;                  // value elements per lane
  constexpr int kPieces = D / 64;            // 16-byte pieces of a key per lane in the score phase
  constexpr int kPieceStride = D / kPieces;  // elements between a lane's pieces (64)
  __shared__ __align__(16) float s_q[R][D];
  __shared__ float s_w[R][kChunk];  // the chunk's scores, then its weights
  __shared__ float s_max[R], s_sum[R], s_alpha[R];
  __shared__ __align__(16) float s_acc[kWarps][R][D];

  device::begin_after_prior_kernels();
  if (p.first_seq_index_device != nullptr) p.first_seq_index = *p.first_seq_index_device;
  const int64_t b = blockIdx.z, kvh = blockIdx.y;
  const int split = blockIdx.x, splits = gridDim.x;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int key_group = tid / kGroupLanes, group_lane = tid % kGroupLanes;
  const int64_t group = p.num_heads / p.num_kv_heads;
  const int rows = static_cast<int>(p.new_tokens * group);

  for (int i = tid; i < rows * D / 8; i += kThreads) {  // the queries, 8 elements at a time
    const int r = i / (D / 8), d = (i % (D / 8)) * 8;
    const int64_t tq = r / group, h = kvh * group + r % group;
    float f[8];
    to_floats<8>(
        *reinterpret_cast<const uint4*>(p.q + ((b * p.new_tokens + tq) * p.num_heads + h) * D + d),
        f);
    *reinterpret_cast<float4*>(&s_q[r][d]) = make_float4(f[0], f[1], f[2], f[3]);
    *reinterpret_cast<float4*>(&s_q[r][d + 4]) = make_float4(f[4], f[5], f[6], f[7]);
  }
  if (tid < R) {
    s_max[tid] = -INFINITY;
    s_sum[tid] = 0.0f;
  }
  float acc[R][E];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int e = 0; e < E; ++e) acc[r][e] = 0.0f;
  }
  __syncthreads();

  const int64_t begin = split * keys_per_split;
  const int64_t end = std::min(begin + keys_per_split, p.capacity + p.new_tokens);
  for (int64_t j0 = begin; j0 < end; j0 += kChunk) {
    // Every load of the chunk first: keys key_group + 16 u (score phase), values warp + 4 t
    // (value phase). Every slot of the pool is a valid address; empty slots are masked (and
    // their values zeroed, as they may hold anything).
    uint4 k_raw[kScoreRounds][kPieces];
    int64_t k_seq[kScoreRounds];
#pragma unroll
    for (int u = 0; u < kScoreRounds; ++u) {
      const int64_t j = j0 + key_group + u * kKeysAtOnce;
      k_seq[u] = -1;
#pragma unroll
      for (int i = 0; i < kPieces; ++i) k_raw[u][i] = make_uint4(0, 0, 0, 0);
      if (j < end) {
        const bf16 *k_src, *v_src;
        k_seq[u] = key_at(p, b, kvh, j, &k_src, &v_src);
#pragma unroll
        for (int i = 0; i < kPieces; ++i) {
          k_raw[u][i] = *reinterpret_cast<const uint4*>(k_src + i * kPieceStride + group_lane * 8);
        }
      }
    }
    RawValue<E> v_raw[kValueKeys];
    bool v_live[kValueKeys];
#pragma unroll
    for (int t = 0; t < kValueKeys; ++t) {
      const int64_t j = j0 + warp + t * kWarps;
      v_live[t] = false;
      if (j < end) {
        const bf16 *k_src, *v_src;
        v_live[t] = key_at(p, b, kvh, j, &k_src, &v_src) >= 0;
        v_raw[t] = *reinterpret_cast<const RawValue<E>*>(v_src + lane * E);
      }
    }

    // 1. Scores (every lane of a group ends with the sum; lane r % 8 stores row r's).
#pragma unroll
    for (int u = 0; u < kScoreRounds; ++u) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r >= rows) break;  // the same in every thread
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < kPieces; ++i) {
          dot = dot8(k_raw[u][i], &s_q[r][i * kPieceStride + group_lane * 8], dot);
        }
        dot += __shfl_xor_sync(kFullMask, dot, 1);
        dot += __shfl_xor_sync(kFullMask, dot, 2);
        dot += __shfl_xor_sync(kFullMask, dot, 4);
        if (group_lane == r % kGroupLanes) {
          const bool seen = visible(p.first_seq_index + r / group, k_seq[u], p.sliding_window);
          s_w[r][key_group + u * kKeysAtOnce] = seen ? dot * scale_log2 : -INFINITY;
        }
      }
    }
    __syncthreads();

    // 2. Softmax: a warp per row, a lane per key of the chunk.
    for (int r = warp; r < rows; r += kWarps) {
      const float s = s_w[r][lane];
      const float old_max = s_max[r];
      const float new_max = fmaxf(old_max, warp_max(s));
      const bool any = new_max != -INFINITY;
      const float w = any ? exp2f(s - new_max) : 0.0f;
      const float alpha = any ? exp2f(old_max - new_max) : 1.0f;
      const float sum = warp_sum(w);
      s_w[r][lane] = w;
      __syncwarp();
      if (lane == 0) {
        s_max[r] = new_max;
        s_sum[r] = s_sum[r] * alpha + sum;
        s_alpha[r] = alpha;
      }
    }
    __syncthreads();

    // 3. Values.
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r >= rows) break;
      const float alpha = s_alpha[r];
#pragma unroll
      for (int e = 0; e < E; ++e) acc[r][e] *= alpha;
    }
#pragma unroll
    for (int t = 0; t < kValueKeys; ++t) {
      if (!v_live[t]) continue;  // the same in the whole warp
      float v[E];
      to_floats<E>(v_raw[t], v);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r >= rows) break;
        const float w = s_w[r][warp + t * kWarps];
#pragma unroll
        for (int e = 0; e < E; ++e) acc[r][e] = fmaf(w, v[e], acc[r][e]);
      }
    }
    __syncthreads();  // s_w and s_alpha are written again by the next chunk
  }

  // Merge the warps (one scale, so a sum), then normalize or store the split's partial sums.
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r >= rows) break;
#pragma unroll
    for (int e = 0; e < E; ++e) s_acc[warp][r][lane * E + e] = acc[r][e];
  }
  __syncthreads();
  for (int idx = tid; idx < rows * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    float a = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) a += s_acc[w][r][d];
    const float m = s_max[r], l = s_sum[r];
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
