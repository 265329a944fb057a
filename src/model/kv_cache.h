// KvCache: the keys and values of every layer for a batch of sequences that advance together
// (one sequence index per column of the batch; left padding keeps them aligned). With a sliding
// window W the cache is a rolling buffer of W slots per row (slot = sequence index mod W), which is
// all that attention can ever see again; without one it holds max_sequence_length slots. Owns its
// memory; not thread-safe; one forward pass at a time.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "model/config.h"

namespace mistral {

class KvCache {
 public:
  // Fails with a clear message when the cache would not fit in the memory available.
  static Result<KvCache> create(const ModelConfig& config, int64_t batch,
                                int64_t max_sequence_length);

  int64_t batch() const { return batch_; }
  int64_t capacity() const { return capacity_; }
  // Sequence index of the next token (tokens seen so far, padding included).
  int64_t length() const { return length_; }
  // Real (non-padding) tokens seen so far in row b: the position id of its next real token.
  int64_t row_tokens(int64_t b) const { return row_tokens_[b]; }
  // Whether `new_tokens` more tokens fit (always true for a rolling sliding-window cache).
  Status check_room(int64_t new_tokens) const;

  float* keys(int64_t layer) { return keys_[layer].data(); }
  float* values(int64_t layer) { return values_[layer].data(); }
  const int64_t* slot_seq_index() const { return slot_seq_index_.data(); }
  const uint8_t* slot_valid() const { return slot_valid_.data(); }

  // Stores one layer's keys/values of T new tokens ([B, T, kv_dim]); only the last `capacity`
  // tokens are kept. Call for every layer after its attention, then advance() once.
  void store_layer(int64_t layer, const float* k, const float* v, int64_t new_tokens);
  // Records T new tokens with their padding mask [B, T].
  void advance(const uint8_t* valid, int64_t new_tokens);
  // Resident bytes of keys and values.
  uint64_t bytes() const;

 private:
  int64_t slot_of(int64_t seq_index) const { return seq_index % capacity_; }

  int64_t batch_ = 0;
  int64_t capacity_ = 0;
  int64_t kv_dim_ = 0;
  bool rolling_ = false;
  int64_t length_ = 0;
  std::vector<std::vector<float>> keys_;    // per layer [B, capacity, kv_dim]
  std::vector<std::vector<float>> values_;  // per layer [B, capacity, kv_dim]
  std::vector<int64_t> slot_seq_index_;     // [capacity], -1 when empty
  std::vector<uint8_t> slot_valid_;         // [B, capacity]
  std::vector<int64_t> row_tokens_;         // [B]
};

// Physical memory currently available to allocate, in bytes.
uint64_t available_memory_bytes();

}  // namespace mistral
