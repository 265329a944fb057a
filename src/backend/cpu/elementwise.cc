// Row-wise and element-wise CPU ops: embedding lookup, RMSNorm, rotary embeddings, SwiGLU, add.
// Each reproduces the arithmetic of Hugging Face's MistralModel in float32.
#include <cmath>
#include <vector>

#include "backend/cpu/ops.h"
#include "core/check.h"
#include "core/quant.h"
#include "core/thread_pool.h"

namespace mistral::cpu {

void embed(const Tensor& table, const int32_t* ids, int64_t n, float* out) {
  const int64_t hidden = table.shape[1];
  if (table.quantized()) {
    for (int64_t i = 0; i < n; ++i) dequantize_row(table, ids[i], out + i * hidden);
    return;
  }
  const size_t row_bytes = static_cast<size_t>(hidden) * dtype_size(table.dtype);
  const auto* base = static_cast<const uint8_t*>(table.data);
  for (int64_t i = 0; i < n; ++i) {
    row_to_f32(base + static_cast<size_t>(ids[i]) * row_bytes, table.dtype, hidden,
               out + i * hidden);
  }
}

void rmsnorm(const float* x, int64_t m, const Tensor& weight, float eps, float* y) {
  MISTRAL_CHECK(weight.dtype == DType::kF32) << "norm weights are kept in F32";
  const int64_t n = weight.shape[0];
  const float* w = weight.as<float>();
  ThreadPool::global().parallel_for(m, 16, [&](size_t begin, size_t end) {
    for (size_t r = begin; r < end; ++r) {
      const float* xr = x + r * n;
      float* yr = y + r * n;
      const float mean = dot_f32(xr, xr, n) / static_cast<float>(n);
      const float inv = 1.0f / std::sqrt(mean + eps);
      for (int64_t i = 0; i < n; ++i) yr[i] = w[i] * (xr[i] * inv);
    }
  });
}

void rope(float* x, int64_t tokens, int64_t heads, int64_t head_dim, const int64_t* positions,
          double theta) {
  const int64_t half = head_dim / 2;
  // inv_freq as transformers computes it: float32 pow of the float32 base.
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[i] = 1.0f / std::pow(static_cast<float>(theta), exponent);
  }
  ThreadPool::global().parallel_for(tokens, 4, [&](size_t begin, size_t end) {
    std::vector<float> cos_v(half), sin_v(half);
    for (size_t t = begin; t < end; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        const float angle = static_cast<float>(positions[t]) * inv_freq[i];
        cos_v[i] = std::cos(angle);
        sin_v[i] = std::sin(angle);
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + (t * heads + h) * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[i], b = v[i + half];
          v[i] = a * cos_v[i] - b * sin_v[i];
          v[i + half] = b * cos_v[i] + a * sin_v[i];
        }
      }
    }
  });
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  ThreadPool::global().parallel_for(n, 1 << 14, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      const float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  });
}

void add(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace mistral::cpu
