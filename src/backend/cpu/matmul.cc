// Matrix product y = x * w^T for F32 activations and F32/BF16 weights (F16 weights are widened
// at load time). Threads split the output features; each thread widens a tile of 4 weight rows
// once and reuses it for every activation row, so prefill pays the conversion once per tile.
#include <algorithm>
#include <vector>

#include "backend/cpu/ops.h"
#include "core/check.h"
#include "core/half.h"
#include "core/thread_pool.h"

namespace mistral::cpu {
namespace {

constexpr int64_t kTileRows = 4;

__attribute__((target_clones("avx512f", "avx2", "default"))) void dot4(
    const float* x, const float* w0, const float* w1, const float* w2, const float* w3, int64_t k,
    float* out) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t i = 0; i < k; ++i) {
    s0 += x[i] * w0[i];
    s1 += x[i] * w1[i];
    s2 += x[i] * w2[i];
    s3 += x[i] * w3[i];
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

}  // namespace

__attribute__((target_clones("avx512f", "avx2", "default"))) float dot_f32(const float* a,
                                                                           const float* b,
                                                                           int64_t n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void row_to_f32(const void* src,
                                                                             DType dtype, int64_t n,
                                                                             float* dst) {
  switch (dtype) {
    case DType::kF32:
      std::copy_n(static_cast<const float*>(src), n, dst);
      return;
    case DType::kBF16: {
      const auto* s = static_cast<const uint16_t*>(src);
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) dst[i] = std::bit_cast<float>(uint32_t{s[i]} << 16);
      return;
    }
    case DType::kF16: {
      const auto* s = static_cast<const F16*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_float(s[i]);
      return;
    }
    default:
      MISTRAL_CHECK(false) << "row_to_f32: unsupported dtype " << dtype_name(dtype);
  }
}

void matmul(const float* x, int64_t m, const Tensor& w, float* y) {
  MISTRAL_CHECK(w.shape.size() == 2) << "matmul weight must be 2-D";
  const int64_t n = w.shape[0];
  const int64_t k = w.shape[1];
  const size_t elem = dtype_size(w.dtype);
  const auto* wbytes = static_cast<const uint8_t*>(w.data);
  const int64_t tiles = (n + kTileRows - 1) / kTileRows;
  ThreadPool::global().parallel_for(tiles, 8, [&](size_t tile_begin, size_t tile_end) {
    thread_local std::vector<float> scratch;
    scratch.resize(static_cast<size_t>(kTileRows * k));
    const float* rows[kTileRows];
    float acc[kTileRows];
    for (size_t tile = tile_begin; tile < tile_end; ++tile) {
      const int64_t row0 = static_cast<int64_t>(tile) * kTileRows;
      const int64_t count = std::min(kTileRows, n - row0);
      for (int64_t r = 0; r < kTileRows; ++r) {
        const int64_t row = row0 + std::min(r, count - 1);  // pad a short tile by repetition
        const void* src = wbytes + static_cast<size_t>(row) * k * elem;
        if (w.dtype == DType::kF32) {
          rows[r] = static_cast<const float*>(src);
        } else {
          row_to_f32(src, w.dtype, k, scratch.data() + r * k);
          rows[r] = scratch.data() + r * k;
        }
      }
      for (int64_t i = 0; i < m; ++i) {
        dot4(x + i * k, rows[0], rows[1], rows[2], rows[3], k, acc);
        for (int64_t r = 0; r < count; ++r) y[i * n + row0 + r] = acc[r];
      }
    }
  });
}

}  // namespace mistral::cpu
