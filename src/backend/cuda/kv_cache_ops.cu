// Writing a layer's new keys and values into the bf16 KV cache ring (through the block table when
// it is paged) and recording the new tokens in the slot table: the device side of
// Backend::store_kv / record_kv_slots, and of rope_qk_store_kv (rope of q and k, then the write,
// in one kernel).
#include <algorithm>
#include <cstdint>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/kernel_launch.h"
#include "backend/cuda/kernels.h"

namespace mistral::cuda {
namespace {

// Where row b's new token t goes in the cache pool: the first of its kv_dim values (its ring slot,
// through the block table when paged).
__device__ __forceinline__ int64_t store_offset(const KvStoreParams& p, int64_t b, int64_t t,
                                                int64_t kv_dim) {
  const int64_t first_seq_index =
      p.first_seq_index_device != nullptr ? *p.first_seq_index_device : p.first_seq_index;
  return device::new_token_position(p.block_table, p.block_size, p.blocks_per_row, p.capacity, b,
                                    first_seq_index, t) *
         kv_dim;
}

// One block per (row, new token) that is kept; each thread moves 16 bytes at a time when the
// vector length allows it (a cache position holds whole kv_dim vectors, so paging keeps the
// alignment).
__global__ void store_kv_kernel(KvStoreParams p, int64_t first_kept, int64_t kv_dim) {
  device::begin_after_prior_kernels();
  const int64_t kept = p.new_tokens - first_kept;
  const int64_t b = blockIdx.x / kept;
  const int64_t t = first_kept + blockIdx.x % kept;
  const int64_t src = (b * p.new_tokens + t) * kv_dim;
  const int64_t dst = store_offset(p, b, t, kv_dim);
  const bf16* __restrict__ k = p.k;
  const bf16* __restrict__ v = p.v;
  bf16* k_cache = p.k_cache;
  bf16* v_cache = p.v_cache;
  if (kv_dim % 8 == 0) {
    for (int64_t i = int64_t(threadIdx.x) * 8; i < kv_dim; i += int64_t(blockDim.x) * 8) {
      *reinterpret_cast<uint4*>(k_cache + dst + i) = *reinterpret_cast<const uint4*>(k + src + i);
      *reinterpret_cast<uint4*>(v_cache + dst + i) = *reinterpret_cast<const uint4*>(v + src + i);
    }
  } else {
    for (int64_t i = threadIdx.x; i < kv_dim; i += blockDim.x) {
      k_cache[dst + i] = k[src + i];
      v_cache[dst + i] = v[src + i];
    }
  }
}

__global__ void record_slots_kernel(int64_t batch, int64_t new_tokens, int64_t first_kept,
                                    int64_t first_seq_index, const int64_t* first_seq_index_device,
                                    int64_t capacity, const uint8_t* __restrict__ new_valid,
                                    int64_t* __restrict__ slot_seq_index,
                                    uint8_t* __restrict__ slot_valid) {
  device::begin_after_prior_kernels();
  if (first_seq_index_device != nullptr) first_seq_index = *first_seq_index_device;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t kept = new_tokens - first_kept;
  if (i >= kept * batch) return;
  const int64_t b = i / kept;
  const int64_t t = first_kept + i % kept;
  const int64_t slot = (first_seq_index + t) % capacity;
  if (b == 0) slot_seq_index[slot] = first_seq_index + t;
  slot_valid[b * capacity + slot] = new_valid[b * new_tokens + t];
}

// rope_kernel's layout (elementwise.cu: a thread per (token, head, i < d/2) pair, `chunks` blocks
// per token, k's heads after q's) plus the cache write of the token's rotated k and its v, when
// the token is kept (t >= first_kept): each thread writes the k pair it rotated and copies v
// elements idx, idx + chunks * blockDim.x, ... of the token.
__global__ void rope_store_kernel(bf16* q, int64_t heads, const int64_t* __restrict__ positions,
                                  const float* __restrict__ inv_freq, int chunks, KvStoreParams p,
                                  int64_t first_kept) {
  device::begin_after_prior_kernels();
  const int64_t token = blockIdx.x / chunks;
  const int64_t b = token / p.new_tokens, t = token % p.new_tokens;
  const int64_t half = p.head_dim / 2, kv_dim = p.num_kv_heads * p.head_dim;
  const float pos = static_cast<float>(positions[token]);
  const bool keep = t >= first_kept;
  const int64_t dst = keep ? store_offset(p, b, t, kv_dim) : 0;
  bf16* k = const_cast<bf16*>(p.k);
  const int64_t first = int64_t(blockIdx.x % chunks) * blockDim.x + threadIdx.x;
  const int64_t stride = int64_t(chunks) * blockDim.x;
  for (int64_t idx = first; idx < (heads + p.num_kv_heads) * half; idx += stride) {
    const int64_t h = idx / half, i = idx % half;
    if (h < heads) {
      device::rotate_pair(q + (token * heads + h) * p.head_dim, i, half, pos, inv_freq);
      continue;
    }
    const int64_t at = (h - heads) * p.head_dim;
    bf16* key = k + token * kv_dim + at;
    device::rotate_pair(key, i, half, pos, inv_freq);
    if (keep) {
      p.k_cache[dst + at + i] = key[i];
      p.k_cache[dst + at + i + half] = key[i + half];
    }
  }
  if (!keep) return;
  for (int64_t idx = first; idx < kv_dim; idx += stride) {
    p.v_cache[dst + idx] = p.v[token * kv_dim + idx];
  }
}

}  // namespace

void check_cache_blocks(const int32_t* block_table, int64_t block_size, int64_t blocks_per_row,
                        int64_t capacity) {
  if (block_table == nullptr) return;
  MISTRAL_CHECK(block_size >= 1 && block_size <= INT32_MAX && capacity <= INT32_MAX &&
                blocks_per_row * block_size >= capacity)
      << "kv cache blocks: block_size=" << block_size << " blocks_per_row=" << blocks_per_row
      << " capacity=" << capacity;
}

void store_kv(KernelContext& ctx, const KvStoreParams& p) {
  const int64_t first_kept = std::max<int64_t>(0, p.new_tokens - p.capacity);
  const int64_t blocks = p.batch * (p.new_tokens - first_kept);
  if (blocks == 0) return;
  const int64_t kv_dim = p.num_kv_heads * p.head_dim;
  MISTRAL_CHECK(kv_dim % 8 != 0 ||
                (reinterpret_cast<uintptr_t>(p.k) | reinterpret_cast<uintptr_t>(p.v) |
                 reinterpret_cast<uintptr_t>(p.k_cache) | reinterpret_cast<uintptr_t>(p.v_cache)) %
                        16 ==
                    0)
      << "store_kv: pointers must be 16-byte aligned";
  const int64_t per_thread = kv_dim % 8 == 0 ? 8 : 1;
  const int threads =
      static_cast<int>(std::clamp<int64_t>((kv_dim / per_thread + 31) / 32 * 32, 32, 256));
  check_cache_blocks(p.block_table, p.block_size, p.blocks_per_row, p.capacity);
  launch_kernel(ctx, store_kv_kernel, static_cast<unsigned>(blocks), threads, 0, p, first_kept,
                kv_dim);
  MISTRAL_CUDA_CHECK_LAUNCH();
}

void rope_qk_store_kv(KernelContext& ctx, bf16* q, int64_t heads, const int64_t* positions,
                      const float* inv_freq, const KvStoreParams& p) {
  MISTRAL_CHECK(p.head_dim > 0 && p.head_dim % 2 == 0 && heads > 0 && p.num_kv_heads > 0 &&
                p.batch >= 0 && p.new_tokens >= 0 && p.capacity > 0)
      << "rope_qk_store_kv heads=" << heads << " kv_heads=" << p.num_kv_heads
      << " head_dim=" << p.head_dim << " capacity=" << p.capacity;
  const int64_t tokens = p.batch * p.new_tokens;
  if (tokens == 0) return;
  const int64_t first_kept = std::max<int64_t>(0, p.new_tokens - p.capacity);
  check_cache_blocks(p.block_table, p.block_size, p.blocks_per_row, p.capacity);
  const int64_t pairs = (heads + p.num_kv_heads) * p.head_dim / 2;
  constexpr int kThreads = 128;
  const int chunks = static_cast<int>((pairs + kThreads - 1) / kThreads);
  launch_kernel(ctx, rope_store_kernel, static_cast<unsigned>(tokens * chunks), kThreads, 0, q,
                heads, positions, inv_freq, chunks, p, first_kept);
  MISTRAL_CUDA_CHECK_LAUNCH();
}

void record_kv_slots(KernelContext& ctx, int64_t batch, int64_t new_tokens, int64_t first_seq_index,
                     const int64_t* first_seq_index_device, int64_t capacity,
                     const uint8_t* new_valid, int64_t* slot_seq_index, uint8_t* slot_valid) {
  const int64_t first_kept = std::max<int64_t>(0, new_tokens - capacity);
  const int64_t n = batch * (new_tokens - first_kept);
  if (n == 0) return;
  constexpr int kThreads = 256;
  launch_kernel(ctx, record_slots_kernel, static_cast<unsigned>((n + kThreads - 1) / kThreads),
                kThreads, 0, batch, new_tokens, first_kept, first_seq_index, first_seq_index_device,
                capacity, new_valid, slot_seq_index, slot_valid);
  MISTRAL_CUDA_CHECK_LAUNCH();
}

}  // namespace mistral::cuda
