// Matrix product y = x * w^T for F32 activations and F32/BF16 weights (F16 weights are widened
// at load time). Threads split the output features into tiles of 4 weight rows.
//
// Numerics (the contract of Backend::matmul):
//   F32 weights: F32 activations, F32 products and sums.
//   BF16 weights: the activations are rounded to bf16 first (round to nearest even), as Hugging
//     Face's bf16 model does (the input of every bf16 nn.Linear is a bf16 tensor); the products of
//     two bf16 values are exact in F32 and are summed in F32.
// With AVX-512 BF16 (vdpbf16ps) the BF16 product runs on bf16 activations directly
// (matmul_bf16_avx512.h); elsewhere the rounded activations are widened back to F32 and run through
// the portable kernels, which widen a tile of weight rows once and reuse it for every activation
// row, so prefill pays the conversion once per tile.
#include <algorithm>
#include <bit>
#include <type_traits>
#include <vector>

#include "backend/cpu/cpu_features.h"
#include "backend/cpu/matmul_bf16_avx512.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/quantized_matmul.h"
#include "core/check.h"
#include "core/half.h"
#include "core/thread_pool.h"

namespace mistral::cpu {
namespace {

constexpr int64_t kTileRows = 4;

inline float bf16_bits_to_float(uint16_t b) { return std::bit_cast<float>(uint32_t{b} << 16); }

// One activation row against 4 weight rows; the weights are widened in registers, so decode
// streams BF16 weights straight from memory.
template <typename W>
__attribute__((always_inline)) inline void dot_1x4(const float* x, const W* w0, const W* w1,
                                                   const W* w2, const W* w3, int64_t k,
                                                   float* out) {
  auto widen = [](W v) {
    if constexpr (std::is_same_v<W, float>) {
      return v;
    } else {
      return bf16_bits_to_float(v);
    }
  };
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t i = 0; i < k; ++i) {
    s0 += x[i] * widen(w0[i]);
    s1 += x[i] * widen(w1[i]);
    s2 += x[i] * widen(w2[i]);
    s3 += x[i] * widen(w3[i]);
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void dot_1x4_f32(const float* x,
                                                                              const float* const* w,
                                                                              int64_t k,
                                                                              float* out) {
  dot_1x4(x, w[0], w[1], w[2], w[3], k, out);
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void dot_1x4_bf16(
    const float* x, const uint16_t* const* w, int64_t k, float* out) {
  dot_1x4(x, w[0], w[1], w[2], w[3], k, out);
}

// Four activation rows against 4 (already F32) weight rows: 16 accumulators, so every load feeds
// two FMAs and prefill runs near the FMA units' rate instead of the load ports'.
__attribute__((target_clones("avx512f", "avx2", "default"))) void dot_4x4_f32(
    const float* x, int64_t x_stride, const float* const* w, int64_t k, float* out) {
  const float *x0 = x, *x1 = x + x_stride, *x2 = x + 2 * x_stride, *x3 = x + 3 * x_stride;
  const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
  float a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
  float a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
#pragma omp simd reduction(+ : a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, \
                               a31, a32, a33)
  for (int64_t i = 0; i < k; ++i) {
    const float v0 = w0[i], v1 = w1[i], v2 = w2[i], v3 = w3[i];
    a00 += x0[i] * v0;
    a01 += x0[i] * v1;
    a02 += x0[i] * v2;
    a03 += x0[i] * v3;
    a10 += x1[i] * v0;
    a11 += x1[i] * v1;
    a12 += x1[i] * v2;
    a13 += x1[i] * v3;
    a20 += x2[i] * v0;
    a21 += x2[i] * v1;
    a22 += x2[i] * v2;
    a23 += x2[i] * v3;
    a30 += x3[i] * v0;
    a31 += x3[i] * v1;
    a32 += x3[i] * v2;
    a33 += x3[i] * v3;
  }
  const float r[16] = {a00, a01, a02, a03, a10, a11, a12, a13,
                       a20, a21, a22, a23, a30, a31, a32, a33};
  std::copy(r, r + 16, out);
}

// Two activation rows against 4 (already F32) weight rows: each weight load feeds two FMAs.
__attribute__((target_clones("avx512f", "avx2", "default"))) void dot_2x4_f32(
    const float* x0, const float* x1, const float* const* w, int64_t k, float* out0, float* out1) {
  const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
  float a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3, b0, b1, b2, b3)
  for (int64_t i = 0; i < k; ++i) {
    a0 += x0[i] * w0[i];
    a1 += x0[i] * w1[i];
    a2 += x0[i] * w2[i];
    a3 += x0[i] * w3[i];
    b0 += x1[i] * w0[i];
    b1 += x1[i] * w1[i];
    b2 += x1[i] * w2[i];
    b3 += x1[i] * w3[i];
  }
  out0[0] = a0;
  out0[1] = a1;
  out0[2] = a2;
  out0[3] = a3;
  out1[0] = b0;
  out1[1] = b1;
  out1[2] = b2;
  out1[3] = b3;
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

namespace {

// Rounds x[m, k] to bf16 into rows of `stride` values (zero-padded past k).
__attribute__((target_clones("avx512f", "avx2", "default"))) void round_rows_to_bf16(
    const float* x, int64_t m, int64_t k, int64_t stride, uint16_t* out) {
  for (int64_t i = 0; i < m; ++i) {
    const float* src = x + i * k;
    uint16_t* dst = out + i * stride;
#pragma omp simd
    for (int64_t j = 0; j < k; ++j) dst[j] = float_to_bf16(src[j]).bits;
    std::fill(dst + k, dst + stride, uint16_t{0});
  }
}

// The portable kernels for F32 activations against F32 or BF16 weights.
void matmul_portable(const float* x, int64_t m, const Tensor& w, float* y) {
  const int64_t n = w.shape[0];
  const int64_t k = w.shape[1];
  const size_t elem = dtype_size(w.dtype);
  const auto* wbytes = static_cast<const uint8_t*>(w.data);
  const int64_t tiles = (n + kTileRows - 1) / kTileRows;
  // Decode (m == 1) reads BF16 weights directly; prefill widens a tile once for all m rows.
  const bool widen_tile = w.dtype != DType::kF32 && m > 1;
  ThreadPool::global().parallel_for(tiles, 8, [&](size_t tile_begin, size_t tile_end) {
    thread_local std::vector<float> scratch;
    if (widen_tile) scratch.resize(static_cast<size_t>(kTileRows * k));
    const void* rows[kTileRows];
    float acc[2][kTileRows];
    for (size_t tile = tile_begin; tile < tile_end; ++tile) {
      const int64_t row0 = static_cast<int64_t>(tile) * kTileRows;
      const int64_t count = std::min(kTileRows, n - row0);
      for (int64_t r = 0; r < kTileRows; ++r) {
        const int64_t row = row0 + std::min(r, count - 1);  // pad a short tile by repetition
        rows[r] = wbytes + static_cast<size_t>(row) * k * elem;
        if (widen_tile) {
          row_to_f32(rows[r], w.dtype, k, scratch.data() + r * k);
          rows[r] = scratch.data() + r * k;
        }
      }
      const bool f32_rows = widen_tile || w.dtype == DType::kF32;
      const auto* frows = reinterpret_cast<const float* const*>(rows);
      int64_t i = 0;
      if (f32_rows) {
        float acc4[16];
        for (; i + 3 < m; i += 4) {
          dot_4x4_f32(x + i * k, k, frows, k, acc4);
          for (int64_t a = 0; a < 4; ++a) {
            for (int64_t r = 0; r < count; ++r) y[(i + a) * n + row0 + r] = acc4[a * 4 + r];
          }
        }
        for (; i + 1 < m; i += 2) {
          dot_2x4_f32(x + i * k, x + (i + 1) * k, frows, k, acc[0], acc[1]);
          for (int64_t r = 0; r < count; ++r) {
            y[i * n + row0 + r] = acc[0][r];
            y[(i + 1) * n + row0 + r] = acc[1][r];
          }
        }
      }
      for (; i < m; ++i) {
        if (f32_rows) {
          dot_1x4_f32(x + i * k, frows, k, acc[0]);
        } else {
          dot_1x4_bf16(x + i * k, reinterpret_cast<const uint16_t* const*>(rows), k, acc[0]);
        }
        for (int64_t r = 0; r < count; ++r) y[i * n + row0 + r] = acc[0][r];
      }
    }
  });
}

// BF16 weights against activations already rounded to bf16 (xb: m rows of `stride` values), with
// vdpbf16ps. Prefill: each thread takes a contiguous range of weight tiles and runs every
// activation row against a tile before moving on, so the weights stream from memory once.
// Decode: each thread reads its share of rows as two sequential streams (its two halves), two
// rows at a time, as the quantized decode does.
void matmul_bf16_avx512bf16(const uint16_t* xb, int64_t stride, int64_t m, const Tensor& w,
                            float* y) {
  constexpr int64_t MR = kBf16TileActivations, nr = kBf16TileRows;
  const int64_t n = w.shape[0];
  const int64_t k = w.shape[1];
  const auto* wrows = static_cast<const uint16_t*>(w.data);
  if (m == 1) {
    ThreadPool::global().parallel_for(n, 16, [&](size_t begin, size_t end) {
      const int64_t half = static_cast<int64_t>(end - begin) / 2;
      for (int64_t i = 0; i < half; ++i) {  // rows i and half + i of the share
        const int64_t r0 = static_cast<int64_t>(begin) + i, r1 = r0 + half;
        const uint16_t* rows[2] = {wrows + r0 * k, wrows + r1 * k};
        float out[2];
        bf16_gemv_rows_avx512bf16(xb, 2, rows, k, out);
        y[r0] = out[0];
        y[r1] = out[1];
      }
      if ((end - begin) % 2 != 0) {
        const int64_t r = static_cast<int64_t>(end) - 1;
        const uint16_t* row = wrows + r * k;
        bf16_gemv_rows_avx512bf16(xb, 1, &row, k, y + r);
      }
    });
    return;
  }
  const int64_t tiles = (n + nr - 1) / nr;
  ThreadPool::global().parallel_for(tiles, 8, [&](size_t tile_begin, size_t tile_end) {
    const uint16_t* rows[nr];
    float out[MR * nr];
    for (size_t tile = tile_begin; tile < tile_end; ++tile) {
      const int64_t row0 = static_cast<int64_t>(tile) * nr;
      const int64_t count = std::min(nr, n - row0);
      for (int64_t r = 0; r < nr; ++r) {
        rows[r] = wrows + (row0 + std::min(r, count - 1)) * k;  // pad a short tile by repetition
      }
      for (int64_t i = 0; i < m; i += MR) {
        const int mx = static_cast<int>(std::min(MR, m - i));
        bf16_tile_avx512bf16(xb + i * stride, stride, mx, rows, k, out);
        for (int a = 0; a < mx; ++a) {
          for (int64_t r = 0; r < count; ++r) y[(i + a) * n + row0 + r] = out[a * nr + r];
        }
      }
    }
  });
}

}  // namespace

void matmul(const float* x, int64_t m, const Tensor& w, float* y) {
  MISTRAL_CHECK(w.shape.size() == 2) << "matmul weight must be 2-D";
  if (w.quantized()) return quantized_matmul(x, m, w, y);
  MISTRAL_CHECK(w.dtype == DType::kF32 || w.dtype == DType::kBF16)
      << "matmul weights must be F32 or BF16, got " << dtype_name(w.dtype);
  if (w.dtype == DType::kF32) return matmul_portable(x, m, w, y);
  const int64_t k = w.shape[1];
  // Rows padded to 32 values, plus 64 bytes so that activation rows 4 KiB apart (k a multiple of
  // 2048) do not compete for the same L1 sets: 15-25% of the prefill tile's speed.
  const int64_t stride = (k + 31) / 32 * 32 + 32;
  // The caller's thread writes the rounded activations; workers only read them.
  thread_local std::vector<uint16_t> xb;
  xb.resize(static_cast<size_t>(m * stride));
  round_rows_to_bf16(x, m, k, stride, xb.data());
  if (cpu_features().avx512_bf16()) return matmul_bf16_avx512bf16(xb.data(), stride, m, w, y);
  thread_local std::vector<float> rounded;
  rounded.resize(static_cast<size_t>(m * k));
  for (int64_t i = 0; i < m; ++i)
    row_to_f32(xb.data() + i * stride, DType::kBF16, k, rounded.data() + i * k);
  matmul_portable(rounded.data(), m, w, y);
}

}  // namespace mistral::cpu
