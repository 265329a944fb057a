// Grouped-query attention on the CPU over the cached ring of keys plus this call's keys, with
// Hugging Face's causal, padding and sliding-window mask. Softmax in float32 as HF's eager path.
// Parallel over (row, head) pairs; scores are gathered per query, so memory is O(capacity + T).
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/ops.h"
#include "core/thread_pool.h"

namespace mistral::cpu {
namespace {

bool visible(int64_t q_index, int64_t k_index, int64_t window) {
  return k_index <= q_index && (window <= 0 || q_index - k_index < window);
}

}  // namespace

void attention(const AttentionArgs& a) {
  const int64_t group = a.num_heads / a.num_kv_heads;
  const int64_t hd = a.head_dim;
  const int64_t q_stride = a.num_heads * hd;
  const int64_t kv_stride = a.num_kv_heads * hd;
  ThreadPool::global().parallel_for(a.batch * a.num_heads, 1, [&](size_t begin, size_t end) {
    std::vector<float> scores;
    std::vector<const float*> values;
    std::vector<float> acc(hd);
    for (size_t bh = begin; bh < end; ++bh) {
      const int64_t b = static_cast<int64_t>(bh) / a.num_heads;
      const int64_t h = static_cast<int64_t>(bh) % a.num_heads;
      const int64_t kvh = h / group;
      for (int64_t t = 0; t < a.new_tokens; ++t) {
        const float* q = a.q + (b * a.new_tokens + t) * q_stride + h * hd;
        float* out = a.out + (b * a.new_tokens + t) * q_stride + h * hd;
        const int64_t q_index = a.first_seq_index + t;
        scores.clear();
        values.clear();
        for (int64_t s = 0; s < a.capacity; ++s) {
          const int64_t k_index = a.slot_seq_index[s];
          if (k_index < 0 || !a.slot_valid[b * a.capacity + s]) continue;
          if (!visible(q_index, k_index, a.sliding_window)) continue;
          const int64_t off = (b * a.capacity + s) * kv_stride + kvh * hd;
          scores.push_back(dot_f32(q, a.k_cache + off, hd) * a.scale);
          values.push_back(a.v_cache + off);
        }
        for (int64_t j = 0; j <= t; ++j) {
          if (!a.new_valid[b * a.new_tokens + j]) continue;
          if (!visible(q_index, a.first_seq_index + j, a.sliding_window)) continue;
          const int64_t off = (b * a.new_tokens + j) * kv_stride + kvh * hd;
          scores.push_back(dot_f32(q, a.k + off, hd) * a.scale);
          values.push_back(a.v + off);
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
            const float p = scores[i] * inv;
            const float* v = values[i];
            for (int64_t d = 0; d < hd; ++d) acc[d] += p * v[d];
          }
        }
        std::copy(acc.begin(), acc.end(), out);
      }
    }
  });
}

}  // namespace mistral::cpu
