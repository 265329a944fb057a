// Decode attention, flash-decoding style: the virtual key list of each (batch row, kv head) is cut
// into splits, one block per split, so that even one sequence fills the GPU. The rows of a block
// are the T x group queries that share the kv head. A block is one or two walkers of 4 warps
// (two when the splits are merged in the kernel, below, and rows <= 8), each walking every other
// chunk of 32 keys of the split, in three phases:
//  1. scores: a group of 8 lanes per key (each lane 8 or 16 of its elements; the queries from
//     shared memory), summed by three xor-shuffles, written to shared memory (-inf if masked);
//  2. softmax: a warp per row takes the chunk's 32 scores, updates the row's running max and sum
//     (float32, base 2) and turns the scores into weights exp2(s - max);
//  3. values: a warp per key in turn, each lane holding head_dim / 32 elements of every row's
//     output, rescaled once per chunk.
// Each warp first resolves the chunk's 32 keys, a lane per key (slot, block table, sequence index),
// and hands the key and value addresses to the lanes that load them by shuffles: one key_at per
// lane and chunk instead of one for every key a lane touches (10; Nsight Compute counted a third
// of the kernel's instructions there). The key and value loads of a chunk go out together.
// Every walker ends with a partial (max, sum, unnormalized output) per row. The partials of a
// (row, kv head) are merged
//  - in the kernel when there is one split, or when the splits fit one thread block cluster
//    (sm_90, up to 16 blocks; 11 for a 7B at 640 positions): the blocks of a cluster read each
//    other's partials from shared memory (distributed shared memory), so no second kernel and no
//    trip through global memory. On an H100 (7B, 640 positions) decode went from 175.9 / 290.6 /
//    422.5 to 177.2 / 295.3 / 433.1 tok/s (bf16 / int8 / int4; bench/RESULTS.md);
//  - otherwise (longer contexts: 65 splits at 4,096 positions) by a second kernel, from partials
//    in global scratch. MISTRAL_ATTN_CLUSTER=0 takes this path for any split count > 1.
// A walker's first chunk of cached keys and values is loaded before the kernel waits for the one
// before it (the comment there says why that is safe), so those loads overlap that kernel.
// attention_decode_rope_store folds rope and the cache write of the new token into the kernel
// (one new token per row, head_dim 128): each block rotates its queries as it loads them, and
// the walker whose chunk holds the new key rotates it in registers and writes it and its value
// to the cache. That removes rope_qk_store_kv's kernel from the decode chain.
#include <cooperative_groups.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/kernel_launch.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/trace.cuh"
#include "core/env.h"

namespace mistral::cuda {
namespace {

using namespace device;

constexpr int kWalkerWarps = 4;                               // warps per walker
constexpr int kGroupLanes = 8;                                // lanes per key in the score phase
constexpr int kKeysAtOnce = kWalkerWarps * 32 / kGroupLanes;  // keys a walker scores at once (16)
constexpr int kChunk = 32;                                    // keys per chunk: a warp's lanes
constexpr int kScoreRounds = kChunk / kKeysAtOnce;            // keys per lane group and chunk
constexpr int kValueKeys = kChunk / kWalkerWarps;             // keys per warp and chunk
static_assert(kChunk == 32 && kScoreRounds * kKeysAtOnce == kChunk);
// Splits: enough for kBlocksPerSm blocks per SM over all (row, kv head) pairs, each of at least
// kMinKeysPerSplit keys and of whole chunks for every walker (MISTRAL_ATTN_BLOCKS_PER_SM and
// MISTRAL_ATTN_MIN_KEYS override the two, for benchmarks). On an H100 (7B, 4,096 positions) 4 and
// 32 were as fast as 4 and 16 and 3% faster than 2 and 64 (bench/RESULTS.md). Whole chunks: a
// decode step sees the cache plus one new key (641 at 640 positions), and splits of 33 keys
// walked a second chunk, with its loads, barriers and softmax, for one key.
constexpr int kMinKeysPerSplit = 32;
constexpr int kBlocksPerSm = 4;
constexpr int kMaxClusterBlocks = 16;  // the largest cluster sm_90 allows (non-portable above 8)

// Which of a chunk's keys a load takes: all, those in the cache, or this call's new ones.
enum class Keys { kAll, kCached, kNew };

// E bf16 (E = 2, 4 or 8: 4, 8 or 16 bytes) as loaded, and as float.
template <int E>
using RawValue = std::conditional_t<E == 8, uint4, std::conditional_t<E == 4, uint2, uint32_t>>;
template <int E>
__device__ __forceinline__ void to_floats(RawValue<E> raw, float (&f)[E]) {
  if constexpr (E == 8) {
    unpack_bf16x8(raw, f);
  } else {
    uint32_t words[E / 2];
    if constexpr (E == 4) {
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

// Walkers per block: two (8 warps) when the walkers' partials are merged in the kernel and
// rows <= kMaxWalkerRows (their warps' outputs must fit static shared memory), else one. (Two
// walkers double the merge kernel's parts: 4,096 positions decoded 5.7% slower that way on an
// H100.)
constexpr int kMaxWalkerRows = 8;

// A pointer of another lane.
template <typename T>
__device__ __forceinline__ const T* shfl_pointer(const T* p, int lane) {
  return reinterpret_cast<const T*>(
      __shfl_sync(kFullMask, reinterpret_cast<unsigned long long>(p), lane));
}

// The address of `local` (shared memory) in block `rank` of this block's cluster when the grid
// is in clusters (sm_90), else `local` itself (rank 0 is the only block then); and the barrier
// over the cluster's blocks, or the block's.
template <typename T>
__device__ __forceinline__ const T* cluster_shared(const T* local, int rank, bool clustered) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (clustered) return cooperative_groups::this_cluster().map_shared_rank(local, rank);
#endif
  return local;
}
__device__ __forceinline__ void cluster_barrier(bool clustered) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (clustered) return cooperative_groups::this_cluster().sync();
#endif
  __syncthreads();
}
// The cluster barrier at a kernel's end, when it only keeps the blocks' shared memory alive for
// the others' reads: a relaxed arrive (the reads whose values were used are complete) does not
// wait for this block's global stores, as the release of cluster_barrier does.
__device__ __forceinline__ void cluster_exit_barrier(bool clustered) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (clustered) {
    asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
    asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory");
    return;
  }
#endif
  __syncthreads();
}

// Query heads per kv head (<= kMaxDecodeRows), in 32 bits: the kernels divide row indices by it,
// and a 64-bit division is a ~70-instruction routine where a 32-bit one is a few.
__device__ __forceinline__ int query_group(const AttentionParams& p) {
  return static_cast<int>(p.num_heads) / static_cast<int>(p.num_kv_heads);
}

// The merged output of query row r (of the kv head's T x group rows) at element d: the parts'
// factor-weighted sum a over their total weight l, or 0 for a row that saw no key.
template <int D>
__device__ __forceinline__ void store_output(const AttentionParams& p, int64_t b, int64_t kvh,
                                             int r, int d, float a, float l) {
  const int group = query_group(p);
  const int64_t tq = r / group, h = kvh * group + r % group;
  p.out[((b * p.new_tokens + tq) * p.num_heads + h) * D + d] =
      __float2bfloat16_rn(l > 0.0f ? a / l : 0.0f);
}

// Blocks per SM the register budget must allow: two for the 7B shape's two walkers (rows <= 4),
// at most 128 registers a thread, so an SM that runs one can also take a block of the GEMV after
// it (the first loads before the first chunk's wait took the kernel from 128 to 157 registers).
template <int R, int W>
constexpr int kDecodeMinBlocks = R > 4    ? 1
                                 : W == 2 ? 2
                                          : 4;

// R: the largest row count this instance takes (rows = T * group <= R); W walkers. With
// merge_in_kernel the grid's x extent (the splits) is one cluster (or 1); otherwise each walker
// writes its partial to part_acc / part_ml as part split * W + walker.
template <int D, int R, int W>
__global__ void __launch_bounds__(W* kWalkerWarps * 32, kDecodeMinBlocks<R, W>)
    attention_decode_kernel(AttentionParams p, DecodeRope rope, float scale_log2,
                            int64_t keys_per_split, bool merge_in_kernel,
                            float* __restrict__ part_acc, float* __restrict__ part_ml) {
  static_assert(W == 1 || (W == 2 && R <= kMaxWalkerRows));
  constexpr int kWarps = W * kWalkerWarps;
  constexpr int kThreads = kWarps * 32;
  constexpr int E = D / 32;                  // value elements per lane
  constexpr int kPieces = D / 64;            // 16-byte pieces of a key per lane in the score phase
  constexpr int kPieceStride = D / kPieces;  // elements between a lane's pieces (64)
  constexpr int kHalf = D / 2;               // rope pairs (d, d + kHalf)
  __shared__ __align__(16) float s_q[R][D];
  __shared__ float s_w[W][R][kChunk];  // each walker's chunk scores, then weights
  __shared__ float s_max[W][R], s_sum[W][R], s_alpha[W][R];
  // Each warp's output; after the walk, walker w's partial is in s_acc[w * kWalkerWarps].
  __shared__ __align__(16) float s_acc[kWarps][R][D];
  __shared__ float s_factor[R][W * kMaxClusterBlocks], s_total[R];  // the in-kernel merge
  __shared__ float s_cos[D / 2], s_sin[D / 2];  // rope's angles at the row's position (rope)
  __shared__ int64_t s_row_seq[R];              // each query row's sequence index (the mask's)
  __shared__ int64_t s_new_key_offset;          // with rope: where the new key goes in the caches

  // Before the wait: the slot tables, block table, padding mask and sequence index (copied from
  // the host or written by an earlier forward call, whose kernels have all completed: a call
  // starts with host copies), and the cached keys and values of the walker's first chunk. The
  // one cache slot per row written meanwhile (by rope_qk_store_kv, the kernel before this one,
  // or with rope by this kernel) is, until the slot table is updated after the step, empty or
  // one window back: masked, so what is read there is never used (KvCache::write_args). The
  // queries and this call's new keys and values come after the wait.
  device::trace_enter();
  if (p.first_seq_index_device != nullptr) p.first_seq_index = *p.first_seq_index_device;
  const int64_t b = blockIdx.z, kvh = blockIdx.y;
  const int split = blockIdx.x, splits = gridDim.x;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int walker = tid / (kWalkerWarps * 32), walker_warp = warp % kWalkerWarps;
  const int walker_tid = tid % (kWalkerWarps * 32);
  const int key_group = walker_tid / kGroupLanes, group_lane = walker_tid % kGroupLanes;
  const int group = query_group(p);
  const int rows = static_cast<int>(p.new_tokens) * group;
  const int64_t begin = split * keys_per_split;
  const int64_t end = std::min(begin + keys_per_split, p.capacity + p.new_tokens);

  // A chunk's keys: lane l resolves key j0 + l (every slot of the pool is a valid address; empty
  // slots are masked, and their values, which may hold anything, are never used), then the
  // chunk's loads go out together: keys key_group + 16 u (score phase), values walker_warp + 4 t
  // (value phase), of the cache, of the new keys, or of both (Keys).
  const bf16* key_src = p.k_cache;
  const bf16* value_src = p.v_cache;
  int64_t seq = -1;
  uint4 k_raw[kScoreRounds][kPieces];
  RawValue<E> v_raw[kValueKeys];
  auto resolve = [&](int64_t j0) {
    key_src = p.k_cache;
    value_src = p.v_cache;
    seq = -1;
    if (j0 + lane < end) seq = key_at(p, b, kvh, j0 + lane, &key_src, &value_src);
  };
  auto load = [&](int64_t j0, Keys which) {
    auto taken = [&](int64_t j) {
      return j < end && (which == Keys::kAll || (j < p.capacity) == (which == Keys::kCached));
    };
#pragma unroll
    for (int u = 0; u < kScoreRounds; ++u) {
      const int key = key_group + u * kKeysAtOnce;
      const bf16* src = shfl_pointer(key_src, key);
      const bool take = taken(j0 + key);
#pragma unroll
      for (int i = 0; i < kPieces; ++i) {
        if (take) {
          k_raw[u][i] = *reinterpret_cast<const uint4*>(src + i * kPieceStride + group_lane * 8);
        } else if (which != Keys::kNew) {
          k_raw[u][i] = make_uint4(0, 0, 0, 0);
        }
      }
    }
#pragma unroll
    for (int t = 0; t < kValueKeys; ++t) {
      const int key = walker_warp + t * kWalkerWarps;
      const bf16* src = shfl_pointer(value_src, key);
      if (taken(j0 + key)) v_raw[t] = *reinterpret_cast<const RawValue<E>*>(src + lane * E);
    }
  };
  // With rope: the chunk's new keys (j >= capacity; row b's token j - capacity) rotated in
  // registers, where the score phase holds both halves of each pair (pieces 0 and 1: elements
  // group_lane * 8 + e and that + D / 2), then written with their values to the token's cache slot,
  // as rope_qk_store_kv writes them. Each new key is in one walker's chunk of one block.
  auto rope_and_store_new_keys = [&](int64_t j0) {
    if constexpr (kPieces == 2) {
#pragma unroll
      for (int u = 0; u < kScoreRounds; ++u) {
        const int64_t j = j0 + key_group + u * kKeysAtOnce;
        if (j < p.capacity || j >= end) continue;
        float lo[8], hi[8];
        to_floats<8>(k_raw[u][0], lo);
        to_floats<8>(k_raw[u][1], hi);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          rotate_values<bf16>(lo[e], hi[e], s_cos[group_lane * 8 + e], s_sin[group_lane * 8 + e]);
        }
        k_raw[u][0] = pack_bf16x8(lo);
        k_raw[u][1] = pack_bf16x8(hi);
        bf16* dst = rope.k_cache + s_new_key_offset + group_lane * 8;
        *reinterpret_cast<uint4*>(dst) = k_raw[u][0];
        *reinterpret_cast<uint4*>(dst + kHalf) = k_raw[u][1];
      }
#pragma unroll
      for (int t = 0; t < kValueKeys; ++t) {
        const int64_t j = j0 + walker_warp + t * kWalkerWarps;
        if (j < p.capacity || j >= end) continue;
        *reinterpret_cast<RawValue<E>*>(rope.v_cache + s_new_key_offset + lane * E) = v_raw[t];
      }
    }
  };
  resolve(begin + walker * kChunk);
  load(begin + walker * kChunk, Keys::kCached);
  // With rope (one new token per row, head_dim 128: attention_decode_rope_supported), the
  // angles of the row's position, before the wait too (positions and inv_freq come from the host).
  // The new key's cache offset is computed once here: with rope there is one new token per row,
  // so the one new key a chunk can hold is j = capacity (its ring slot is a 64-bit modulo, which
  // in the key loop was inlined at every key a lane might store). The rows' sequence indices too.
  const bool roped = kPieces == 2 && rope.positions != nullptr;
  if (roped) {
    if (tid < kHalf) {
      rope_angle<bf16>(static_cast<float>(rope.positions[b]), rope.inv_freq[tid], s_cos[tid],
                       s_sin[tid]);
    }
    if (tid == kThreads - 1) {
      s_new_key_offset = (new_token_position(p.block_table, p.block_size, p.blocks_per_row,
                                             p.capacity, b, p.first_seq_index, 0) *
                              p.num_kv_heads +
                          kvh) *
                         D;
    }
  }
  if (tid < rows) s_row_seq[tid] = p.first_seq_index + tid / group;
  __syncthreads();
  device::trace_reserve(6);
  device::wait_for_prior_kernels();
  device::trace_mark(1);

  // The queries as floats in s_q, 8 elements at a time; with rope, 8 pairs (d, d + D / 2).
  auto store_q = [&](int r, int d, const float(&f)[8]) {
    *reinterpret_cast<float4*>(&s_q[r][d]) = make_float4(f[0], f[1], f[2], f[3]);
    *reinterpret_cast<float4*>(&s_q[r][d + 4]) = make_float4(f[4], f[5], f[6], f[7]);
  };
  auto q_row = [&](int r) {
    const int64_t tq = r / group, h = kvh * group + r % group;
    return p.q + ((b * p.new_tokens + tq) * p.num_heads + h) * D;
  };
  if (roped) {
    for (int i = tid; i < rows * kHalf / 8; i += kThreads) {
      const int r = i / (kHalf / 8), d = (i % (kHalf / 8)) * 8;
      float lo[8], hi[8];
      to_floats<8>(*reinterpret_cast<const uint4*>(q_row(r) + d), lo);
      to_floats<8>(*reinterpret_cast<const uint4*>(q_row(r) + d + kHalf), hi);
#pragma unroll
      for (int e = 0; e < 8; ++e) rotate_values<bf16>(lo[e], hi[e], s_cos[d + e], s_sin[d + e]);
      store_q(r, d, lo);
      store_q(r, d + kHalf, hi);
    }
  } else {
    for (int i = tid; i < rows * D / 8; i += kThreads) {
      const int r = i / (D / 8), d = (i % (D / 8)) * 8;
      float f[8];
      to_floats<8>(*reinterpret_cast<const uint4*>(q_row(r) + d), f);
      store_q(r, d, f);
    }
  }
  if (tid < W * R) {
    (&s_max[0][0])[tid] = -INFINITY;
    (&s_sum[0][0])[tid] = 0.0f;
  }
  float acc[R][E];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int e = 0; e < E; ++e) acc[r][e] = 0.0f;
  }
  __syncthreads();
  device::trace_mark(2);
  // The next kernel (o's GEMV) is let in only now, after the queries are staged, so that its
  // early weight loads queue behind this block's loads of the first chunk and of the queries,
  // not ahead of them. On an H100 (7B, 512-token prompt; bench/RESULTS.md, 2026-12-08) decode at
  // batch 1 was 0.3-0.6% faster than letting it in after the first chunk's loads and 0.9-1.7%
  // faster than letting it in at the kernel's start.
  device::allow_next_kernel();

  for (int64_t pair = begin; pair < end; pair += W * kChunk) {  // the same steps in every walker
    const int64_t j0 = pair + walker * kChunk;
    if (pair != begin) {
      resolve(j0);
      load(j0, Keys::kAll);
    } else if (j0 + kChunk > p.capacity) {
      load(j0, Keys::kNew);  // the first chunk's cached keys were loaded before the wait
    }
    if (roped && j0 + kChunk > p.capacity) rope_and_store_new_keys(j0);
    const unsigned live = __ballot_sync(kFullMask, seq >= 0);
    int64_t k_seq[kScoreRounds];
#pragma unroll
    for (int u = 0; u < kScoreRounds; ++u) {
      k_seq[u] = __shfl_sync(kFullMask, static_cast<long long>(seq), key_group + u * kKeysAtOnce);
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
          const bool seen = visible(s_row_seq[r], k_seq[u], p.sliding_window);
          s_w[walker][r][key_group + u * kKeysAtOnce] = seen ? dot * scale_log2 : -INFINITY;
        }
      }
    }
    __syncthreads();

    // 2. Softmax: a warp per row, a lane per key of the chunk.
    for (int r = walker_warp; r < rows; r += kWalkerWarps) {
      const float s = s_w[walker][r][lane];
      const float old_max = s_max[walker][r];
      const float new_max = fmaxf(old_max, warp_max(s));
      const bool any = new_max != -INFINITY;
      const float w = any ? exp2f(s - new_max) : 0.0f;
      const float alpha = any ? exp2f(old_max - new_max) : 1.0f;
      const float sum = warp_sum(w);
      s_w[walker][r][lane] = w;
      __syncwarp();
      if (lane == 0) {
        s_max[walker][r] = new_max;
        s_sum[walker][r] = s_sum[walker][r] * alpha + sum;
        s_alpha[walker][r] = alpha;
      }
    }
    __syncthreads();

    // 3. Values.
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r >= rows) break;
      const float alpha = s_alpha[walker][r];
#pragma unroll
      for (int e = 0; e < E; ++e) acc[r][e] *= alpha;
    }
#pragma unroll
    for (int t = 0; t < kValueKeys; ++t) {
      const int key = walker_warp + t * kWalkerWarps;
      if (j0 + key >= end || !((live >> key) & 1u)) continue;  // the same in the whole warp
      float v[E];
      to_floats<E>(v_raw[t], v);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r >= rows) break;
        const float w = s_w[walker][r][key];
#pragma unroll
        for (int e = 0; e < E; ++e) acc[r][e] = fmaf(w, v[e], acc[r][e]);
      }
    }
    __syncthreads();  // s_w and s_alpha are written again by the next chunk
  }

  device::trace_mark(3);
  // Each walker's partial: its warps' outputs summed (one scale, so a sum), in place in the
  // walker's first slot, or stored for the merge kernel.
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r >= rows) break;
#pragma unroll
    for (int e = 0; e < E; ++e) s_acc[warp][r][lane * E + e] = acc[r][e];
  }
  __syncthreads();
  const int parts = splits * W;
  for (int idx = tid; idx < W * R * D; idx += kThreads) {  // R, D: shifts, not divisions
    const int w = idx / (R * D), r = idx / D % R, d = idx % D;
    if (r >= rows) continue;
    float a = 0.0f;
#pragma unroll
    for (int i = 0; i < kWalkerWarps; ++i) a += s_acc[w * kWalkerWarps + i][r][d];
    if (merge_in_kernel) {
      s_acc[w * kWalkerWarps][r][d] = a;
    } else {
      const int64_t slot = ((b * p.num_kv_heads + kvh) * parts + split * W + w) * rows + r;
      part_acc[slot * D + d] = a;
      if (d == 0) {
        part_ml[2 * slot] = s_max[w][r];
        part_ml[2 * slot + 1] = s_sum[w][r];
      }
    }
  }
  if (!merge_in_kernel) {
    device::trace_mark(4);  // no merge here: 4 and 5 both mark the partials stored
    device::trace_finish(kTraceAttention, 6);
    return;
  }

  // The merge, over the parts (split, walker) of every block of the cluster: a warp per row
  // takes the factors exp2(max_part - max) (a lane per part) and the total sum; then each output
  // element, spread over the cluster's blocks, is its parts' sum times their factors, over the
  // total.
  const bool clustered = splits > 1;
  cluster_barrier(clustered);  // every block's partials are written
  device::trace_mark(4);
  for (int r = warp; r < rows; r += kWarps) {
    float m = -INFINITY, l = 0.0f;
    if (lane < parts) {
      m = *cluster_shared(&s_max[lane % W][r], lane / W, clustered);
      l = *cluster_shared(&s_sum[lane % W][r], lane / W, clustered);
    }
    const float top = warp_max(m);
    const float f = lane < parts && top != -INFINITY ? exp2f(m - top) : 0.0f;
    const float total = warp_sum(l * f);
    if (lane < parts) s_factor[r][lane] = f;
    if (lane == 0) s_total[r] = total;
  }
  __syncthreads();
  for (int idx = split * kThreads + tid; idx < rows * D; idx += splits * kThreads) {
    const int r = idx / D, d = idx % D;
    float a = 0.0f;
    for (int part = 0; part < parts; ++part) {
      a = fmaf(*cluster_shared(&s_acc[(part % W) * kWalkerWarps][r][d], part / W, clustered),
               s_factor[r][part], a);
    }
    store_output<D>(p, b, kvh, r, d, a, s_total[r]);
  }
  device::trace_finish(kTraceAttention, 6);
  cluster_exit_barrier(clustered);  // no block leaves while another may read its shared memory
}

// One block of D threads per (batch row, kv head, query row): merges the parts' partial sums.
template <int D>
__global__ void attention_merge_kernel(AttentionParams p, int parts, int rows,
                                       const float* __restrict__ part_acc,
                                       const float* __restrict__ part_ml) {
  device::begin_after_prior_kernels();
  const int64_t idx = blockIdx.x;  // (b * kv_heads + kvh) * rows + r
  const int r = static_cast<int>(idx % rows);
  const int64_t bk = idx / rows, kvh = bk % p.num_kv_heads, b = bk / p.num_kv_heads;
  const int d = threadIdx.x;
  float m = -INFINITY;
  for (int s = 0; s < parts; ++s) m = fmaxf(m, part_ml[2 * ((bk * parts + s) * rows + r)]);
  float l = 0.0f, a = 0.0f;
  if (m != -INFINITY) {
    for (int s = 0; s < parts; ++s) {
      const int64_t slot = (bk * parts + s) * rows + r;
      const float f = exp2f(part_ml[2 * slot] - m);
      l += part_ml[2 * slot + 1] * f;
      a += part_acc[slot * D + d] * f;
    }
  }
  store_output<D>(p, b, kvh, r, d, a, l);
}

// The most blocks a cluster of attention_decode_kernel<D, R, W> may have here (1 before sm_90,
// or with MISTRAL_ATTN_CLUSTER=0), asked of the runtime once per instance.
template <int D, int R, int W>
int max_cluster_blocks(const KernelContext& ctx) {
  if (env_int("MISTRAL_ATTN_CLUSTER", 1) == 0 || ctx.props().major < 9) return 1;
  static const int most = [] {
    auto* kernel = attention_decode_kernel<D, R, W>;
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) !=
        cudaSuccess) {
      (void)cudaGetLastError();
      return 8;  // the portable size
    }
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(kMaxClusterBlocks, 1, 1);
    config.blockDim = dim3(W * kWalkerWarps * 32, 1, 1);
    int blocks = 0;
    if (cudaOccupancyMaxPotentialClusterSize(&blocks, kernel, &config) != cudaSuccess) {
      (void)cudaGetLastError();
      return 1;
    }
    return std::clamp(blocks, 1, kMaxClusterBlocks);
  }();
  return most;
}

// f(D, R, W) as integral constants for these parameters and walkers (1 past kMaxWalkerRows).
template <typename Fn>
void with_shape(const AttentionParams& p, int walkers, Fn&& f) {
  const int64_t rows = p.new_tokens * (p.num_heads / p.num_kv_heads);
  auto with_r = [&](auto d) {
    auto with_w = [&](auto r) {
      if constexpr (decltype(r)::value <= kMaxWalkerRows) {
        if (walkers == 2) return f(d, r, std::integral_constant<int, 2>());
      }
      f(d, r, std::integral_constant<int, 1>());
    };
    if (rows <= 1) return with_w(std::integral_constant<int, 1>());
    if (rows <= 4) return with_w(std::integral_constant<int, 4>());
    if (rows <= 8) return with_w(std::integral_constant<int, 8>());
    with_w(std::integral_constant<int, 16>());
  };
  if (p.head_dim == 128) return with_r(std::integral_constant<int, 128>());
  with_r(std::integral_constant<int, 64>());
}

struct Plan {
  int splits;
  int64_t keys_per_split;
  int walkers;
  bool merge_in_kernel;
};

// Two walkers when their splits are merged in the kernel, else one (see kMaxWalkerRows).
Plan plan_decode(const KernelContext& ctx, const AttentionParams& p) {
  static const int64_t min_keys = std::max(1, env_int("MISTRAL_ATTN_MIN_KEYS", kMinKeysPerSplit));
  static const int64_t blocks_per_sm =
      std::max(1, env_int("MISTRAL_ATTN_BLOCKS_PER_SM", kBlocksPerSm));
  const int64_t rows = p.new_tokens * (p.num_heads / p.num_kv_heads);
  const int64_t keys = p.capacity + p.new_tokens;
  const int64_t heads = p.batch * p.num_kv_heads;
  const int64_t most_splits =
      std::clamp<int64_t>((blocks_per_sm * ctx.num_sms() + heads - 1) / heads, 1, 1024);
  Plan plan{};
  for (int walkers = rows <= kMaxWalkerRows ? 2 : 1; walkers >= 1; --walkers) {
    const int64_t step = int64_t{kChunk} * walkers;  // keys a block takes at once
    int64_t per = std::max(min_keys, (keys + most_splits - 1) / most_splits);
    per = (per + step - 1) / step * step;
    plan = {static_cast<int>((keys + per - 1) / per), per, walkers, false};
    int cluster = 1;
    with_shape(p, walkers, [&](auto d, auto r, auto w) {
      cluster = max_cluster_blocks<decltype(d)::value, decltype(r)::value, decltype(w)::value>(ctx);
    });
    plan.merge_in_kernel = plan.splits <= cluster;
    if (plan.merge_in_kernel) break;
  }
  return plan;
}

template <int D, int R, int W>
void launch_decode(KernelContext& ctx, const AttentionParams& p, const DecodeRope& rope,
                   const Plan& plan, float* part_acc, float* part_ml) {
  const dim3 grid(static_cast<unsigned>(plan.splits), static_cast<unsigned>(p.num_kv_heads),
                  static_cast<unsigned>(p.batch));
  const unsigned cluster = plan.merge_in_kernel ? static_cast<unsigned>(plan.splits) : 1;
  launch_kernel_in_clusters(ctx, cluster, attention_decode_kernel<D, R, W>, grid,
                            W * kWalkerWarps * 32, 0, p, rope, p.scale * kLog2e,
                            plan.keys_per_split, plan.merge_in_kernel, part_acc, part_ml);
  MISTRAL_CUDA_CHECK_LAUNCH();
  if (!plan.merge_in_kernel) {
    const int64_t rows = p.new_tokens * (p.num_heads / p.num_kv_heads);
    const auto blocks = static_cast<unsigned>(p.batch * p.num_kv_heads * rows);
    launch_kernel(ctx, attention_merge_kernel<D>, blocks, D, 0, p, plan.splits * W,
                  static_cast<int>(rows), part_acc, part_ml);
    MISTRAL_CUDA_CHECK_LAUNCH();
  }
}

// Partial results the merge kernel reads, one per (batch row, kv head, part, query row): 0 when
// the merge is in the kernel. Each is head_dim floats in part_acc and (max, sum) in part_ml.
int64_t partial_slots(const AttentionParams& p, const Plan& plan) {
  if (plan.merge_in_kernel) return 0;
  const int64_t rows = p.new_tokens * (p.num_heads / p.num_kv_heads);
  return p.batch * p.num_kv_heads * int64_t{plan.splits} * plan.walkers * rows;
}

size_t scratch_bytes(const AttentionParams& p, const Plan& plan) {
  return static_cast<size_t>(partial_slots(p, plan) * (p.head_dim + 2)) * sizeof(float);
}

// attention_decode, with rope and the cache write folded in when rope.positions is set.
void decode(KernelContext& ctx, const AttentionParams& p, const DecodeRope& rope) {
  check_attention_params(p);
  const int64_t rows = p.new_tokens * (p.num_heads / p.num_kv_heads);
  MISTRAL_CHECK(rows <= kMaxDecodeRows)
      << "decode attention takes new_tokens * group <= " << kMaxDecodeRows << ", got " << rows;
  const Plan plan = plan_decode(ctx, p);
  const size_t need = scratch_bytes(p, plan);
  MISTRAL_CHECK(ctx.scratch_bytes() >= need)
      << "decode attention needs " << need << " bytes of scratch; call reserve_scratch first";
  float* part_acc = static_cast<float*>(ctx.scratch());
  float* part_ml = part_acc + static_cast<size_t>(partial_slots(p, plan) * p.head_dim);
  with_shape(p, plan.walkers, [&](auto d, auto r, auto w) {
    launch_decode<decltype(d)::value, decltype(r)::value, decltype(w)::value>(ctx, p, rope, plan,
                                                                              part_acc, part_ml);
  });
}

}  // namespace

MISTRAL_CUDA_TRACE_ATTACH(trace_attach_attention_decode)

size_t attention_decode_scratch_bytes(const KernelContext& ctx, const AttentionParams& p) {
  return scratch_bytes(p, plan_decode(ctx, p));
}

void attention_decode(KernelContext& ctx, const AttentionParams& p) { decode(ctx, p, {}); }

bool attention_decode_rope_supported(const AttentionParams& p) {
  return p.new_tokens == 1 && p.head_dim == 128 && p.num_kv_heads > 0 &&
         p.num_heads % p.num_kv_heads == 0 && p.num_heads / p.num_kv_heads <= kMaxDecodeRows &&
         p.capacity > 0;
}

void attention_decode_rope_store(KernelContext& ctx, const AttentionParams& p,
                                 const DecodeRope& r) {
  MISTRAL_CHECK(attention_decode_rope_supported(p))
      << "attention_decode_rope_store takes one new token per row and head_dim 128 (got T="
      << p.new_tokens << ", head_dim=" << p.head_dim << ")";
  MISTRAL_CHECK(r.positions != nullptr && r.inv_freq != nullptr && r.k_cache == p.k_cache &&
                r.v_cache == p.v_cache)
      << "attention_decode_rope_store: positions, inv_freq and the cache (as in p) are needed";
  check_cache_blocks(p.block_table, p.block_size, p.blocks_per_row, p.capacity);
  decode(ctx, p, r);
}

}  // namespace mistral::cuda
