#include "model/kv_cache.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>

#include "core/check.h"
#include "core/half.h"

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

std::optional<DType> parse_kv_cache_dtype(std::string_view name) {
  if (name == "int8" || name == "i8" || name == "I8") return DType::kI8;
  return parse_float_dtype(name);
}

bool is_kv_cache_dtype(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16 ||
         dtype == DType::kI8;
}

std::string_view kv_cache_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "f16";
    case DType::kI8:
      return "int8";
    default:
      return "?";
  }
}

uint64_t KvCache::bytes_per_position(const ModelConfig& config, DType dtype) {
  const uint64_t vectors = 2 * static_cast<uint64_t>(config.num_hidden_layers) *
                           static_cast<uint64_t>(config.num_key_value_heads);  // keys and values
  const uint64_t scale_bytes = dtype == DType::kI8 ? sizeof(float) : 0;
  return vectors * (static_cast<uint64_t>(config.head_dim) * dtype_size(dtype) + scale_bytes);
}

Result<KvCache> KvCache::create(const ModelConfig& config, int64_t batch,
                                int64_t max_sequence_length, DType dtype) {
  if (!is_kv_cache_dtype(dtype)) {
    return error("kv cache: storage type " + std::string(dtype_name(dtype)) +
                 " is not one of f32, bf16, f16, int8");
  }
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
  c.dtype_ = dtype;
  c.batch_ = batch;
  c.kv_heads_ = config.num_key_value_heads;
  c.head_dim_ = config.head_dim;
  c.capacity_ = max_sequence_length;
  if (config.sliding_window && *config.sliding_window < max_sequence_length) {
    c.capacity_ = *config.sliding_window;
    c.rolling_ = true;
  }
  // In floating point: batch and length come from requests and may be absurd.
  const double bytes = static_cast<double>(bytes_per_position(config, dtype)) *
                       static_cast<double>(batch) * static_cast<double>(c.capacity_);
  const uint64_t available = available_memory_bytes();
  if (bytes > static_cast<double>(available)) {
    return error("kv cache: needs " + std::to_string(static_cast<uint64_t>(bytes / (1 << 20))) +
                 " MiB (" + std::string(kv_cache_dtype_name(dtype)) + ") for batch " +
                 std::to_string(batch) + " x " + std::to_string(c.capacity_) +
                 " positions, but only " + std::to_string(available >> 20) +
                 " MiB of memory are available");
  }
  c.layers_.resize(config.num_hidden_layers);
  for (Layer& layer : c.layers_) {
    layer.keys = Tensor::allocate(dtype, {batch, c.capacity_, c.kv_heads_, c.head_dim_});
    layer.values = Tensor::allocate(dtype, {batch, c.capacity_, c.kv_heads_, c.head_dim_});
    if (dtype == DType::kI8) {
      layer.key_scales = Tensor::allocate(DType::kF32, {batch, c.capacity_, c.kv_heads_});
      layer.value_scales = Tensor::allocate(DType::kF32, {batch, c.capacity_, c.kv_heads_});
    }
  }
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

void KvCache::store_token(const float* src, Tensor& dst, Tensor& scales, int64_t vec0) {
  const int64_t n = kv_heads_ * head_dim_;
  switch (dtype_) {
    case DType::kF32:
      std::memcpy(static_cast<float*>(dst.mutable_data()) + vec0 * head_dim_, src,
                  n * sizeof(float));
      return;
    case DType::kBF16: {
      BF16* out = static_cast<BF16*>(dst.mutable_data()) + vec0 * head_dim_;
      for (int64_t i = 0; i < n; ++i) out[i] = float_to_bf16(src[i]);
      return;
    }
    case DType::kF16: {
      F16* out = static_cast<F16*>(dst.mutable_data()) + vec0 * head_dim_;
      for (int64_t i = 0; i < n; ++i) out[i] = float_to_f16(src[i]);
      return;
    }
    case DType::kI8:
      for (int64_t h = 0; h < kv_heads_; ++h) {
        const float* x = src + h * head_dim_;
        int8_t* q = static_cast<int8_t*>(dst.mutable_data()) + (vec0 + h) * head_dim_;
        float absmax = 0;
        for (int64_t i = 0; i < head_dim_; ++i) absmax = std::max(absmax, std::fabs(x[i]));
        const float scale = absmax / 127.0f;
        for (int64_t i = 0; i < head_dim_; ++i) {
          const float r = scale > 0 ? std::nearbyint(x[i] / scale) : 0.0f;
          // NaN comes only from non-finite input (which an F32 cache would spread too); it must
          // not reach the float -> int conversion, which it would make undefined.
          q[i] = std::isnan(r) ? 0 : static_cast<int8_t>(std::clamp(r, -127.0f, 127.0f));
        }
        static_cast<float*>(scales.mutable_data())[vec0 + h] = scale;
      }
      return;
    default:
      MISTRAL_CHECK(false) << "kv cache: unsupported dtype " << dtype_name(dtype_);
  }
}

void KvCache::store_layer(int64_t layer, const float* k, const float* v, int64_t new_tokens) {
  Layer& l = layers_[layer];
  const int64_t kv_dim = kv_heads_ * head_dim_;
  const int64_t first = std::max<int64_t>(0, new_tokens - capacity_);
  for (int64_t b = 0; b < batch_; ++b) {
    for (int64_t t = first; t < new_tokens; ++t) {
      const int64_t vec0 = (b * capacity_ + slot_of(length_ + t)) * kv_heads_;
      const int64_t src = (b * new_tokens + t) * kv_dim;
      store_token(k + src, l.keys, l.key_scales, vec0);
      store_token(v + src, l.values, l.value_scales, vec0);
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
  uint64_t total = 0;
  for (const Layer& l : layers_) {
    total += l.keys.num_bytes() + l.values.num_bytes();
    if (!l.key_scales.empty()) total += l.key_scales.num_bytes() + l.value_scales.num_bytes();
  }
  return total;
}

}  // namespace mistral
