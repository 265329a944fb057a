// The key list and mask shared by the attention kernels, and where a cache slot lives (also used
// by the KV store kernel). A row of the batch sees a virtual key list: the `capacity` cache slots
// first, then this call's T new keys. Sequence index of each key: slot_seq_index[slot] (cache; -1
// if empty or padding) or first_seq_index + j (new; -1 if padding).
#pragma once

#include "backend/cuda/kernels.h"

namespace mistral::cuda {
// Aborts on shapes or pointers the kernels cannot take.
void check_attention_params(const AttentionParams& p);
// Aborts on a paged layout cache_position cannot take (nothing to check without a table).
void check_cache_blocks(const int32_t* block_table, int64_t block_size, int64_t blocks_per_row,
                        int64_t capacity);
}  // namespace mistral::cuda

namespace mistral::cuda::device {

// Position in the cache pool of slot s of row b (kernels.h): one table load when paged. The
// division is 32-bit (s < capacity and block_size fit in 31 bits).
__device__ __forceinline__ int64_t cache_position(const int32_t* block_table, int64_t block_size,
                                                  int64_t blocks_per_row, int64_t capacity,
                                                  int64_t b, int64_t s) {
  if (block_table == nullptr) return b * capacity + s;
  const uint32_t size = static_cast<uint32_t>(block_size);
  const uint32_t slot = static_cast<uint32_t>(s);
  const uint32_t logical = slot / size;
  const int32_t block = __ldg(block_table + b * blocks_per_row + logical);
  return static_cast<int64_t>(block) * block_size + (slot - logical * size);
}

// Position in the cache pool where row b's new token t goes (kernels.h's KvStoreParams): its ring
// slot (first_seq_index + t) % capacity, through the block table when paged.
__device__ __forceinline__ int64_t new_token_position(const int32_t* block_table,
                                                      int64_t block_size, int64_t blocks_per_row,
                                                      int64_t capacity, int64_t b,
                                                      int64_t first_seq_index, int64_t t) {
  return cache_position(block_table, block_size, blocks_per_row, capacity, b,
                        (first_seq_index + t) % capacity);
}

// Sequence index of virtual key j of batch row b, or -1 if it is empty or padding; *src is the
// start of its key (and, with v_src, value) vector for kv head kvh. The table load does not wait
// for the slot's validity (every table entry is a block of the pool), so it overlaps the slot
// table's loads.
__device__ __forceinline__ int64_t key_at(const AttentionParams& p, int64_t b, int64_t kvh,
                                          int64_t j, const bf16** k_src, const bf16** v_src) {
  if (j < p.capacity) {
    const int64_t pos =
        cache_position(p.block_table, p.block_size, p.blocks_per_row, p.capacity, b, j);
    const int64_t off = (pos * p.num_kv_heads + kvh) * p.head_dim;
    *k_src = p.k_cache + off;
    *v_src = p.v_cache + off;
    const int64_t seq = p.slot_seq_index[j];
    return p.slot_valid[b * p.capacity + j] != 0 && seq >= 0 ? seq : -1;
  }
  const int64_t jn = j - p.capacity;
  const int64_t off = ((b * p.new_tokens + jn) * p.num_kv_heads + kvh) * p.head_dim;
  *k_src = p.k + off;
  *v_src = p.v + off;
  return p.new_valid[b * p.new_tokens + jn] != 0 ? p.first_seq_index + jn : -1;
}

// Hugging Face's mask: causal, and inside the sliding window when there is one.
__device__ __forceinline__ bool visible(int64_t q_seq, int64_t k_seq, int64_t window) {
  return k_seq >= 0 && k_seq <= q_seq && (window <= 0 || q_seq - k_seq < window);
}

constexpr float kLog2e = 1.4426950408889634f;

}  // namespace mistral::cuda::device
