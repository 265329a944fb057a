// Writing new keys and values into the KV cache ring (store_kv, each slot found through the block
// table when the cache is paged) and recording their slots (record_kv_slots) on the CPU.
// Conversion to the storage type: F32 copied, BF16/F16 rounded to nearest even, I8 as one scale
// per (row, slot, kv head) vector, s = max|x| / 127 and q = round(x / s) with ties to even
// (model/kv_cache.h).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/ops.h"
#include "core/check.h"
#include "core/half.h"

namespace mistral::cpu {
namespace {

// Converts the kv_heads vectors of one token ([kv_heads * head_dim] F32) into the cache vectors
// starting at vector index vec0.
void store_token(const float* src, const KvWriteArgs& a, void* dst, float* scales, int64_t vec0) {
  const int64_t hd = a.head_dim;
  const int64_t n = a.num_kv_heads * hd;
  switch (a.cache_dtype) {
    case DType::kF32:
      std::memcpy(static_cast<float*>(dst) + vec0 * hd, src, n * sizeof(float));
      return;
    case DType::kBF16: {
      BF16* out = static_cast<BF16*>(dst) + vec0 * hd;
      for (int64_t i = 0; i < n; ++i) out[i] = float_to_bf16(src[i]);
      return;
    }
    case DType::kF16: {
      F16* out = static_cast<F16*>(dst) + vec0 * hd;
      for (int64_t i = 0; i < n; ++i) out[i] = float_to_f16(src[i]);
      return;
    }
    case DType::kI8:
      for (int64_t h = 0; h < a.num_kv_heads; ++h) {
        const float* x = src + h * hd;
        int8_t* q = static_cast<int8_t*>(dst) + (vec0 + h) * hd;
        float absmax = 0;
        for (int64_t i = 0; i < hd; ++i) absmax = std::max(absmax, std::fabs(x[i]));
        const float scale = absmax / 127.0f;
        for (int64_t i = 0; i < hd; ++i) {
          const float r = scale > 0 ? std::nearbyint(x[i] / scale) : 0.0f;
          // NaN comes only from non-finite input (which an F32 cache would spread too); it must
          // not reach the float -> int conversion, which it would make undefined.
          q[i] = std::isnan(r) ? 0 : static_cast<int8_t>(std::clamp(r, -127.0f, 127.0f));
        }
        scales[vec0 + h] = scale;
      }
      return;
    default:
      MISTRAL_CHECK(false) << "kv cache: unsupported dtype " << dtype_name(a.cache_dtype);
  }
}

}  // namespace

void store_kv(const KvWriteArgs& a) {
  const int64_t T = a.new_tokens;
  const int64_t kv_dim = a.num_kv_heads * a.head_dim;
  const int64_t first = std::max<int64_t>(0, T - a.capacity);
  const auto* k = static_cast<const float*>(a.k);
  const auto* v = static_cast<const float*>(a.v);
  for (int64_t b = 0; b < a.batch; ++b) {
    for (int64_t t = first; t < T; ++t) {
      const int64_t slot = (a.first_seq_index + t) % a.capacity;
      const int64_t vec0 = kv_cache_position(a.blocks, a.capacity, b, slot) * a.num_kv_heads;
      const int64_t src = (b * T + t) * kv_dim;
      store_token(k + src, a, a.k_cache, a.k_scale, vec0);
      store_token(v + src, a, a.v_cache, a.v_scale, vec0);
    }
  }
}

void record_kv_slots(int64_t batch, int64_t new_tokens, int64_t first_seq_index, int64_t capacity,
                     const uint8_t* new_valid, int64_t* slot_seq_index, uint8_t* slot_valid) {
  for (int64_t t = std::max<int64_t>(0, new_tokens - capacity); t < new_tokens; ++t) {
    const int64_t slot = (first_seq_index + t) % capacity;
    slot_seq_index[slot] = first_seq_index + t;
    for (int64_t b = 0; b < batch; ++b)
      slot_valid[b * capacity + slot] = new_valid[b * new_tokens + t];
  }
}

}  // namespace mistral::cpu
