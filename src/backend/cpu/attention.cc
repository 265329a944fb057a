// Grouped-query attention on the CPU over the cached ring of keys plus this call's keys, with
// Hugging Face's causal, padding and sliding-window mask. Softmax in float32 as HF's eager path.
// Parallel over (row, head) pairs; scores are gathered per query, so memory is O(capacity + T).
// The cache is read in its storage type (F32, BF16, F16, or I8 with a scale per vector) through
// row_dot / row_axpy (kv_rows.cc), which widen each row in registers, each slot found through the
// block table when it is paged (kv_cache_position, backend.h); this call's keys and values are F32.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/ops.h"
#include "core/check.h"
#include "core/thread_pool.h"

namespace mistral::cpu {
namespace {

bool visible(int64_t q_index, int64_t k_index, int64_t window) {
  return k_index <= q_index && (window <= 0 || q_index - k_index < window);
}

// A value row that the weighted sum reads: its data, storage type and I8 scale (1 otherwise).
struct ValueRow {
  const void* data;
  DType dtype;
  float scale;
};

}  // namespace

void attention(const AttentionArgs& a) {
  const DType cache_dtype = a.cache_dtype;
  MISTRAL_CHECK(cache_dtype == DType::kF32 || cache_dtype == DType::kBF16 ||
                cache_dtype == DType::kF16 || cache_dtype == DType::kI8)
      << "attention: unsupported kv cache dtype " << dtype_name(cache_dtype);
  const bool scaled = cache_dtype == DType::kI8;
  MISTRAL_CHECK(!scaled || a.capacity == 0 || (a.k_scale != nullptr && a.v_scale != nullptr))
      << "attention: an I8 kv cache needs its scales";
  const int64_t group = a.num_heads / a.num_kv_heads;
  const int64_t hd = a.head_dim;
  const int64_t q_stride = a.num_heads * hd;
  const int64_t kv_stride = a.num_kv_heads * hd;
  const size_t cache_row_bytes = static_cast<size_t>(hd) * dtype_size(cache_dtype);
  const auto* k_cache = static_cast<const uint8_t*>(a.k_cache);
  const auto* v_cache = static_cast<const uint8_t*>(a.v_cache);
  const auto* q_all = static_cast<const float*>(a.q);
  const auto* k_new = static_cast<const float*>(a.k);
  const auto* v_new = static_cast<const float*>(a.v);
  auto* out_all = static_cast<float*>(a.out);
  ThreadPool::global().parallel_for(a.batch * a.num_heads, 1, [&](size_t begin, size_t end) {
    std::vector<float> scores;
    std::vector<ValueRow> values;
    std::vector<float> acc(hd);
    for (size_t bh = begin; bh < end; ++bh) {
      const int64_t b = static_cast<int64_t>(bh) / a.num_heads;
      const int64_t h = static_cast<int64_t>(bh) % a.num_heads;
      const int64_t kvh = h / group;
      for (int64_t t = 0; t < a.new_tokens; ++t) {
        const float* q = q_all + (b * a.new_tokens + t) * q_stride + h * hd;
        float* out = out_all + (b * a.new_tokens + t) * q_stride + h * hd;
        const int64_t q_index = a.first_seq_index + t;
        scores.clear();
        values.clear();
        for (int64_t s = 0; s < a.capacity; ++s) {
          const int64_t k_index = a.slot_seq_index[s];
          if (k_index < 0 || !a.slot_valid[b * a.capacity + s]) continue;
          if (!visible(q_index, k_index, a.sliding_window)) continue;
          // (pool position, head) of the row's slot: through the block table when paged
          const int64_t vec = kv_cache_position(a.blocks, a.capacity, b, s) * a.num_kv_heads + kvh;
          const size_t off = static_cast<size_t>(vec) * cache_row_bytes;
          const float k_scale = scaled ? a.k_scale[vec] : 1.0f;
          scores.push_back(row_dot(q, k_cache + off, cache_dtype, hd) * k_scale * a.scale);
          values.push_back({v_cache + off, cache_dtype, scaled ? a.v_scale[vec] : 1.0f});
        }
        for (int64_t j = 0; j <= t; ++j) {
          if (!a.new_valid[b * a.new_tokens + j]) continue;
          if (!visible(q_index, a.first_seq_index + j, a.sliding_window)) continue;
          const int64_t off = (b * a.new_tokens + j) * kv_stride + kvh * hd;
          scores.push_back(dot_f32(q, k_new + off, hd) * a.scale);
          values.push_back({v_new + off, DType::kF32, 1.0f});
        }
        std::fill(acc.begin(), acc.end(), 0.0f);
        if (!scores.empty()) {
          float max_score = -std::numeric_limits<float>::infinity();
          for (float s : scores) max_score = std::max(max_score, s);
          float sum = 0;
          for (float& s : scores) {
            s = std::exp(s - max_score);
            sum += s;
          }
          const float inv = 1.0f / sum;
          for (size_t i = 0; i < scores.size(); ++i) {
            const ValueRow& v = values[i];
            row_axpy(scores[i] * inv * v.scale, v.data, v.dtype, hd, acc.data());
          }
        }
        std::copy(acc.begin(), acc.end(), out);
      }
    }
  });
}

}  // namespace mistral::cpu
