// KvCache: the keys and values of every layer for a batch of sequences that advance together
// (one sequence index per column of the batch; left padding keeps them aligned). With a sliding
// window W the cache is a rolling buffer of W slots per row (slot = sequence index mod W), which is
// all that attention can ever see again; without one it holds max_sequence_length slots. Owns its
// memory (move-only), allocated through the Backend that runs the model (host memory for the CPU,
// device memory for CUDA) and written through that backend's ops; a cache must not outlive the
// backend it was created with (the Model). Not thread-safe; one forward pass at a time.
//
// Paged layout: each layer's keys (and values, and I8 scales) are one pool of num_blocks blocks of
// block_size positions, [num_blocks, block_size, kv_heads, head_dim]. A row's `capacity` logical
// slots are cut into blocks_per_row = ceil(capacity / block_size) logical blocks, and the row's
// block table maps each to a physical block of the pool: slot s of row b lives at position
// table[b][s / block_size] * block_size + s % block_size. Every row always has a full table and
// no physical block serves two (row, logical block) pairs. By default blocks are of 16 positions
// (fewer when the capacity is), num_blocks is exactly batch * blocks_per_row and row b gets
// blocks b * blocks_per_row, ...; set_block_table gives a row other blocks (what a scheduler that
// pages sequences does). The slot rules above (ring, slot_seq_index, slot_valid) are the same
// whatever the table; only where a slot's vectors live changes, so any valid table gives the
// same results bit for bit. Memory is num_blocks * block_size positions.
//
// Storage types (the `dtype` of create): F32 (the default: exact), BF16 or F16 (each value rounded
// to nearest even: half the memory), or I8 (a quarter plus 4 bytes per head vector): every
// (row, slot, kv head) vector x of head_dim values is stored as int8 q = round(x / s), ties to
// even, with one float scale s = max|x| / 127 (0 for an all-zero vector), so x ~ q * s.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "core/status.h"
#include "core/tensor.h"
#include "model/config.h"

namespace mistral {

// Parses a KV cache storage type: "f32", "bf16", "f16" (and the other spellings of
// parse_float_dtype) or "int8"/"i8"; nullopt for anything else.
std::optional<DType> parse_kv_cache_dtype(std::string_view name);
// Whether a cache can be stored as `dtype` (F32, BF16, F16, I8).
bool is_kv_cache_dtype(DType dtype);
// "f32", "bf16", "f16" or "int8"; "?" for a type a cache cannot have.
std::string_view kv_cache_dtype_name(DType dtype);

// Positions per block unless asked otherwise (vLLM's default).
inline constexpr int64_t kDefaultKvBlockSize = 16;

// How a cache's pools are cut into blocks (see KvCache).
struct KvCacheLayout {
  // Positions per block, in [1, 2^31); 0: kDefaultKvBlockSize, or the capacity when that is
  // smaller (a short rolling window then wastes nothing).
  int64_t block_size = 0;
  // Physical blocks per layer; 0: batch * blocks_per_row, what the default tables use. More
  // leaves spare blocks that set_block_table can hand out.
  int64_t num_blocks = 0;
};

class KvCache {
 public:
  // Fails with a clear message for a storage type the backend does not store, a layout that
  // cannot hold the batch (naming block_size or num_blocks), or when the cache would not fit in
  // the memory available.
  static Result<KvCache> create(const ModelConfig& config, int64_t batch,
                                int64_t max_sequence_length, DType dtype, Backend& backend,
                                const KvCacheLayout& layout = {});
  // A cache in host memory, for models on the CPU backend.
  static Result<KvCache> create(const ModelConfig& config, int64_t batch,
                                int64_t max_sequence_length, DType dtype = DType::kF32,
                                const KvCacheLayout& layout = {});
  // Bytes one position of one row takes over all layers (keys, values and I8 scales).
  static uint64_t bytes_per_position(const ModelConfig& config, DType dtype);

  KvCache(KvCache&&) = default;
  KvCache& operator=(KvCache&&) = default;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  DType dtype() const { return dtype_; }
  // A number no other cache of this process has (moves keep it): what a recording of ops on
  // this cache's buffers is keyed on.
  uint64_t id() const { return id_; }
  // The name of the backend whose memory holds the cache ("cpu", "cuda:0").
  std::string backend_name() const { return backend_->name(); }
  int64_t batch() const { return batch_; }
  int64_t capacity() const { return capacity_; }
  // Sequence index of the next token (tokens seen so far, padding included).
  int64_t length() const { return length_; }
  // Real (non-padding) tokens seen so far in row b: the position id of its next real token.
  int64_t row_tokens(int64_t b) const { return row_tokens_[b]; }
  // Whether `new_tokens` more tokens fit (always true for a rolling sliding-window cache).
  Status check_room(int64_t new_tokens) const;

  int64_t block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t blocks_per_row() const { return blocks_per_row_; }
  // The block tables (backend memory): [B, blocks_per_row] int32 physical block ids.
  const int32_t* block_table() const { return block_table_.as<int32_t>(); }
  // Row b's block table (host copy).
  std::vector<int32_t> row_block_table(int64_t row) const;
  // Gives row `row` the physical blocks `blocks` (blocks_per_row ids in [0, num_blocks)). Refused,
  // naming the row and block, when a block is out of range or would serve two (row, logical
  // block) pairs of the cache; then nothing changes. Contents are not moved: a block holds
  // whatever was last written to it, so a row given new blocks in mid-sequence reads those
  // (the caller copies or refills what it needs). Ordered with the ops like to_device.
  Status set_block_table(int64_t row, std::span<const int32_t> blocks);
  // Every row's table at once ([B, blocks_per_row]), so blocks can move between rows.
  Status set_block_tables(std::span<const int32_t> table);
  // The layout as the backend ops take it.
  KvBlockTable block_layout() const { return {block_size_, blocks_per_row_, block_table()}; }

  // One layer as stored (backend memory): the pool, [num_blocks * block_size, kv_heads, head_dim]
  // of dtype(); for I8 also the scales, [num_blocks * block_size, kv_heads] floats (nullptr for
  // the other types).
  const void* keys(int64_t layer) const { return layers_[layer].keys.data; }
  const void* values(int64_t layer) const { return layers_[layer].values.data; }
  const float* key_scales(int64_t layer) const { return layers_[layer].key_scales.as<float>(); }
  const float* value_scales(int64_t layer) const { return layers_[layer].value_scales.as<float>(); }
  // The slot table (backend memory): [capacity] sequence index of each slot (-1: empty) and
  // [B, capacity] whether that slot of a row holds a real token.
  const int64_t* slot_seq_index() const { return slot_seq_index_.as<int64_t>(); }
  const uint8_t* slot_valid() const { return slot_valid_.as<uint8_t>(); }

  // Stores one layer's keys/values of T new tokens ([B, T, kv_dim] activations of the backend,
  // in its memory), converted to dtype(); only the last `capacity` tokens are kept. Call for
  // every layer after its attention (with T = 1 it may come before: see write_args), then
  // advance() once.
  // first_seq_index_device: length() in backend memory, for backends that record ops (else null).
  void store_layer(int64_t layer, const void* k, const void* v, int64_t new_tokens,
                   const int64_t* first_seq_index_device = nullptr);
  // What store_layer hands Backend::store_kv, for a backend op that stores as it computes
  // (Backend::rope_qk_store_kv). With T = 1 the store may precede the layer's attention: the
  // slot it writes is, until advance(), empty or holds the position one window back, which the
  // new token's query does not see (the ring holds exactly the sliding window).
  KvWriteArgs write_args(int64_t layer, const void* k, const void* v, int64_t new_tokens,
                         const int64_t* first_seq_index_device = nullptr) const;
  // Records T new tokens with their padding mask [B, T] (host memory; valid_device, when given,
  // is the same mask in backend memory, else it is copied there).
  void advance(const uint8_t* valid, int64_t new_tokens, const uint8_t* valid_device = nullptr,
               const int64_t* first_seq_index_device = nullptr);
  // Takes back the last advance() when it was of one token per row with mask `valid` [B]: the
  // length and the rows' token counts go back, and the slot is marked as holding padding in every
  // row, so no later query sees what was written there. What that write replaced (in a full
  // rolling cache, the position one window back) is lost, but no query from the new length on can
  // see it. A second retract in a row would need it back, so a full rolling cache takes back one
  // step per advance (retractable_steps). Refused, changing nothing, for a step it cannot take
  // back or a mask that does not fit the rows' counts (it must be the one given to advance).
  Status retract(std::span<const uint8_t> valid);
  // How many one-token steps retract can take back now: length() when nothing was overwritten,
  // else 1 right after an advance and 0 after a retract.
  int64_t retractable_steps() const;
  // Resident bytes of keys, values and scales (num_blocks * block_size positions).
  uint64_t bytes() const;

 private:
  struct Layer {
    Buffer keys, values;              // [num_blocks * block_size, kv_heads, head_dim] of dtype_
    Buffer key_scales, value_scales;  // I8: [num_blocks * block_size, kv_heads] F32; else empty
  };

  KvCache() = default;
  // Checks `table` ([B, blocks_per_row]) and makes it the cache's, uploading rows
  // [first_row, end_row).
  Status install_block_table(std::vector<int32_t> table, int64_t first_row, int64_t end_row);
  // valid [B, T] (host memory) in staged_valid_ (backend memory).
  const uint8_t* stage_valid(const uint8_t* valid, int64_t new_tokens);

  Backend* backend_ = nullptr;
  uint64_t id_ = 0;
  DType dtype_ = DType::kF32;
  int64_t batch_ = 0;
  int64_t capacity_ = 0;
  int64_t kv_heads_ = 0;
  int64_t head_dim_ = 0;
  bool rolling_ = false;
  int64_t length_ = 0;
  int64_t retracts_ = 0;  // retract calls since the last advance
  int64_t block_size_ = 0;
  int64_t num_blocks_ = 0;
  int64_t blocks_per_row_ = 0;
  std::vector<Layer> layers_;
  Buffer block_table_;                     // [B, blocks_per_row] int32
  std::vector<int32_t> block_table_host_;  // the same, on the host
  Buffer slot_seq_index_;                  // [capacity] int64, -1 when empty
  Buffer slot_valid_;                      // [B, capacity] uint8
  Buffer staged_valid_;                    // advance()'s mask in backend memory
  std::vector<int64_t> row_tokens_;        // [B]
};

// Physical memory currently available to allocate, in bytes.
uint64_t available_memory_bytes();

}  // namespace mistral
