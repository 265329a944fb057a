#include "model/kv_cache.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <string>

namespace mistral {

uint64_t available_memory_bytes() {
  // MemAvailable counts reclaimable page cache (e.g. the memory-mapped weights), which
  // _SC_AVPHYS_PAGES (MemFree) does not.
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  const long pages = sysconf(_SC_AVPHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_size <= 0) return UINT64_MAX;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size);
}

Result<KvCache> KvCache::create(const ModelConfig& config, int64_t batch,
                                int64_t max_sequence_length) {
  if (batch <= 0) return error("kv cache: batch must be positive, got " + std::to_string(batch));
  if (max_sequence_length <= 0) {
    return error("kv cache: max sequence length must be positive, got " +
                 std::to_string(max_sequence_length));
  }
  if (max_sequence_length > config.max_position_embeddings) {
    return error("kv cache: sequence length " + std::to_string(max_sequence_length) +
                 " exceeds max_position_embeddings (" +
                 std::to_string(config.max_position_embeddings) + ")");
  }
  KvCache c;
  c.batch_ = batch;
  c.kv_dim_ = config.kv_dim();
  c.capacity_ = max_sequence_length;
  if (config.sliding_window && *config.sliding_window < max_sequence_length) {
    c.capacity_ = *config.sliding_window;
    c.rolling_ = true;
  }
  // In floating point: batch and length come from requests and may be absurd.
  const double bytes = 2.0 * 4.0 * static_cast<double>(config.num_hidden_layers) *
                       static_cast<double>(batch) * static_cast<double>(c.capacity_) *
                       static_cast<double>(c.kv_dim_);
  const uint64_t available = available_memory_bytes();
  if (bytes > static_cast<double>(available)) {
    return error("kv cache: needs " + std::to_string(static_cast<uint64_t>(bytes / (1 << 20))) +
                 " MiB for batch " +
                 std::to_string(batch) + " x " + std::to_string(c.capacity_) +
                 " positions, but only " + std::to_string(available >> 20) +
                 " MiB of memory are available");
  }
  const size_t per_layer = static_cast<size_t>(batch * c.capacity_ * c.kv_dim_);
  c.keys_.assign(config.num_hidden_layers, std::vector<float>(per_layer));
  c.values_.assign(config.num_hidden_layers, std::vector<float>(per_layer));
  c.slot_seq_index_.assign(c.capacity_, -1);
  c.slot_valid_.assign(batch * c.capacity_, 0);
  c.row_tokens_.assign(batch, 0);
  return c;
}

Status KvCache::check_room(int64_t new_tokens) const {
  if (rolling_ || length_ + new_tokens <= capacity_) return Status();
  return error("kv cache full: " + std::to_string(length_) + " + " + std::to_string(new_tokens) +
               " tokens exceed its capacity of " + std::to_string(capacity_));
}

void KvCache::store_layer(int64_t layer, const float* k, const float* v, int64_t new_tokens) {
  const int64_t first = std::max<int64_t>(0, new_tokens - capacity_);
  for (int64_t b = 0; b < batch_; ++b) {
    for (int64_t t = first; t < new_tokens; ++t) {
      const int64_t slot = slot_of(length_ + t);
      const size_t dst = static_cast<size_t>((b * capacity_ + slot) * kv_dim_);
      const size_t src = static_cast<size_t>((b * new_tokens + t) * kv_dim_);
      std::memcpy(keys_[layer].data() + dst, k + src, kv_dim_ * sizeof(float));
      std::memcpy(values_[layer].data() + dst, v + src, kv_dim_ * sizeof(float));
    }
  }
}

void KvCache::advance(const uint8_t* valid, int64_t new_tokens) {
  const int64_t first = std::max<int64_t>(0, new_tokens - capacity_);
  for (int64_t t = first; t < new_tokens; ++t) {
    const int64_t slot = slot_of(length_ + t);
    slot_seq_index_[slot] = length_ + t;
    for (int64_t b = 0; b < batch_; ++b)
      slot_valid_[b * capacity_ + slot] = valid[b * new_tokens + t];
  }
  for (int64_t b = 0; b < batch_; ++b) {
    for (int64_t t = 0; t < new_tokens; ++t) row_tokens_[b] += valid[b * new_tokens + t] ? 1 : 0;
  }
  length_ += new_tokens;
}

uint64_t KvCache::bytes() const {
  return keys_.empty() ? 0 : 2ull * keys_.size() * keys_[0].size() * sizeof(float);
}

}  // namespace mistral
