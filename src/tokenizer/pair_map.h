// PairMap: an open-addressing hash map from a pair of token ids to a value, built once at load
// time and then only read (thread-safe reads). The BPE merge loops look pairs up millions of
// times per second; a flat table avoids std::unordered_map's node chasing.
#pragma once

#include <cstdint>
#include <vector>

namespace mistral::tokenizer_internal {

template <typename V>
class PairMap {
 public:
  static uint64_t key(int32_t a, int32_t b) {
    return static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32 | static_cast<uint32_t>(b);
  }

  // Inserts or overwrites (the later of two equal merges wins, as in the tokenizers crate).
  void set(uint64_t k, const V& v) {
    if ((size_ + 1) * 2 > keys_.size()) grow();
    size_t i = slot(k);
    while (keys_[i] != kEmpty && keys_[i] != k) i = (i + 1) & mask_;
    if (keys_[i] == kEmpty) ++size_;
    keys_[i] = k;
    values_[i] = v;
  }
  const V* find(uint64_t k) const {
    if (keys_.empty()) return nullptr;
    for (size_t i = slot(k);; i = (i + 1) & mask_) {
      if (keys_[i] == k) return &values_[i];
      if (keys_[i] == kEmpty) return nullptr;
    }
  }
  size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // ids are < 2^31, so no real key
  size_t slot(uint64_t k) const {
    return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> shift_);
  }
  void grow() {
    std::vector<uint64_t> old_keys = std::move(keys_);
    std::vector<V> old_values = std::move(values_);
    const size_t cap = old_keys.empty() ? 1024 : old_keys.size() * 2;
    keys_.assign(cap, kEmpty);
    values_.assign(cap, V());
    mask_ = cap - 1;
    shift_ = 64;
    for (size_t c = cap; c > 1; c >>= 1) --shift_;
    size_ = 0;
    for (size_t i = 0; i < old_keys.size(); ++i) {
      if (old_keys[i] != kEmpty) set(old_keys[i], old_values[i]);
    }
  }

  std::vector<uint64_t> keys_;
  std::vector<V> values_;
  size_t mask_ = 0, size_ = 0;
  int shift_ = 64;
};

}  // namespace mistral::tokenizer_internal
