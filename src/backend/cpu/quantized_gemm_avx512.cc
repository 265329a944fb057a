// The int8/int4 prefill GEMM of quantized_gemm.h (AVX-512 VNNI).
#include "backend/cpu/avx512_vnni.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "backend/cpu/quantized_gemm.h"
#include "core/check.h"
#include "core/half.h"
#include "core/thread_pool.h"

namespace mistral::cpu {
namespace {

constexpr int64_t G = kQuantGroupSize;
constexpr int kPanel = 32;  // weight rows (output columns) per panel: two vectors of 16
constexpr int kRows = 6;    // rows of x per micro-kernel call

// out[c] = column c of the 16 x 16 matrix of 32-bit elements whose rows are r[0..15].
MISTRAL_AVX512_VNNI inline void transpose_16x16(const __m512i (&r)[16], __m512i (&out)[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  // u[4 j + b], lane L: column 4 L + j of rows 4 b .. 4 b + 3.
  for (int b = 0; b < 4; ++b) {
    u[0 + b] = _mm512_unpacklo_epi64(t[4 * b], t[4 * b + 2]);
    u[4 + b] = _mm512_unpackhi_epi64(t[4 * b], t[4 * b + 2]);
    u[8 + b] = _mm512_unpacklo_epi64(t[4 * b + 1], t[4 * b + 3]);
    u[12 + b] = _mm512_unpackhi_epi64(t[4 * b + 1], t[4 * b + 3]);
  }
  for (int j = 0; j < 4; ++j) {  // 4 x 4 transpose of 128-bit lanes
    const __m512i a = _mm512_shuffle_i32x4(u[4 * j], u[4 * j + 1], 0x44);
    const __m512i b = _mm512_shuffle_i32x4(u[4 * j], u[4 * j + 1], 0xee);
    const __m512i c = _mm512_shuffle_i32x4(u[4 * j + 2], u[4 * j + 3], 0x44);
    const __m512i d = _mm512_shuffle_i32x4(u[4 * j + 2], u[4 * j + 3], 0xee);
    out[0 + j] = _mm512_shuffle_i32x4(a, c, 0x88);
    out[4 + j] = _mm512_shuffle_i32x4(a, c, 0xdd);
    out[8 + j] = _mm512_shuffle_i32x4(b, d, 0x88);
    out[12 + j] = _mm512_shuffle_i32x4(b, d, 0xdd);
  }
}

// Stores transposed column j at quad first + (j / 4) * stride + j % 4 of the panel (those below
// `quads`); `out` points at the panel's first quad for this half of its columns.
MISTRAL_AVX512_VNNI inline void store_quads(const __m512i (&cols)[16], int64_t first,
                                            int64_t stride, int64_t quads, uint8_t* out) {
  for (int j = 0; j < 16; ++j) {
    const int64_t q = first + (j / 4) * stride + j % 4;
    if (q < quads) _mm512_storeu_si512(out + q * kPanel * 4, cols[j]);
  }
}

// Packs weight rows [row0, row0 + count) (count <= kPanel) into `bytes` and `scales` (layout in
// quantized_gemm.h); the columns past count are zero. 16 rows at a time, 64 bytes of each row
// per step through a 16 x 16 transpose of 4-byte quads (int4: the 64 bytes are 4 groups, whose
// low nibbles are quads 0-3 and high nibbles quads 4-7 of each group).
MISTRAL_AVX512_VNNI void pack_panel(const Tensor& w, int64_t row0, int64_t count, uint8_t* bytes,
                                    float* scales) {
  const int64_t k = w.shape[1], groups = k / G, quads = k / 4;
  const bool int4 = w.quant == QuantType::kInt4;
  const int64_t row_bytes = int4 ? k / 2 : k;
  const auto* data = static_cast<const uint8_t*>(w.data);
  const auto* wscales = static_cast<const F16*>(w.scales);
  const __m512i low = _mm512_set1_epi8(0x0f), flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int half = 0; half < kPanel / 16; ++half) {
    for (int64_t off = 0; off < row_bytes; off += 64) {
      const int64_t left = row_bytes - off;
      const __mmask64 mask = left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
      __m512i r[16], cols[16];
      for (int i = 0; i < 16; ++i) {
        const int64_t c = half * 16 + i;
        r[i] = c < count ? _mm512_maskz_loadu_epi8(mask, data + (row0 + c) * row_bytes + off)
                         : _mm512_setzero_si512();
      }
      if (int4) {  // 64 bytes = groups off / 16 .. + 3, 8 quads each
        __m512i lo[16], hi[16];
        for (int i = 0; i < 16; ++i) {
          lo[i] = _mm512_and_si512(r[i], low);
          hi[i] = _mm512_and_si512(_mm512_srli_epi16(r[i], 4), low);
        }
        transpose_16x16(lo, cols);
        store_quads(cols, (off / 16) * 8, 8, quads, bytes + half * 16 * 4);
        transpose_16x16(hi, cols);
        store_quads(cols, (off / 16) * 8 + 4, 8, quads, bytes + half * 16 * 4);
      } else {
        for (int i = 0; i < 16; ++i) r[i] = _mm512_xor_si512(r[i], flip);
        transpose_16x16(r, cols);
        store_quads(cols, off / 4, 4, quads, bytes + half * 16 * 4);
      }
    }
  }
  std::fill(scales, scales + groups * kPanel, 0.0f);
  for (int64_t c = 0; c < count; ++c) {
    const F16* s = wscales + (row0 + c) * groups;
    for (int64_t g = 0; g < groups; ++g) scales[g * kPanel + c] = f16_to_float(s[g]);
  }
}

// Rows of x as the micro-kernel reads them.
struct XRows {
  const int8_t* values[kRows];
  const float* dx[kRows];
  const int32_t* start[kRows];  // -offset * group sum, per group
};

// y[i][0..cols) for MR rows against one packed panel (cols <= kPanel).
template <int MR>
MISTRAL_AVX512_VNNI void micro_kernel(const XRows& x, const uint8_t* bytes, const float* scales,
                                      int64_t groups, float* const* y, int cols) {
  __m512 acc[MR][2];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m512i sum[MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) sum[i][0] = sum[i][1] = _mm512_set1_epi32(x.start[i][g]);
    const uint8_t* pq = bytes + g * (G / 4) * kPanel * 4;
#pragma GCC unroll 8
    for (int q = 0; q < G / 4; ++q) {
      const __m512i w0 = _mm512_loadu_si512(pq + q * kPanel * 4);
      const __m512i w1 = _mm512_loadu_si512(pq + q * kPanel * 4 + 64);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        int32_t quad;
        std::memcpy(&quad, x.values[i] + g * G + q * 4, 4);
        const __m512i xb = _mm512_set1_epi32(quad);
        sum[i][0] = _mm512_dpbusd_epi32(sum[i][0], w0, xb);
        sum[i][1] = _mm512_dpbusd_epi32(sum[i][1], w1, xb);
      }
    }
    const __m512 s0 = _mm512_loadu_ps(scales + g * kPanel);
    const __m512 s1 = _mm512_loadu_ps(scales + g * kPanel + 16);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 dx = _mm512_set1_ps(x.dx[i][g]);
      acc[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[i][0]), _mm512_mul_ps(dx, s0), acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[i][1]), _mm512_mul_ps(dx, s1), acc[i][1]);
    }
  }
  const __mmask16 m0 = cols >= 16 ? 0xffff : static_cast<__mmask16>((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32   ? 0xffff
                       : cols <= 16 ? 0
                                    : static_cast<__mmask16>((1u << (cols - 16)) - 1);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    _mm512_mask_storeu_ps(y[i], m0, acc[i][0]);
    _mm512_mask_storeu_ps(y[i] + 16, m1, acc[i][1]);
  }
}

using MicroKernel = void (*)(const XRows&, const uint8_t*, const float*, int64_t, float* const*,
                             int);
constexpr MicroKernel kMicroKernels[kRows + 1] = {nullptr,         micro_kernel<1>, micro_kernel<2>,
                                                  micro_kernel<3>, micro_kernel<4>, micro_kernel<5>,
                                                  micro_kernel<6>};

}  // namespace

void quantized_gemm_avx512_vnni(const QuantizedRows& x, const Tensor& w, float* y) {
  const int64_t m = x.rows, n = w.shape[0], k = w.shape[1], groups = k / G;
  MISTRAL_CHECK(x.cols == k && k % G == 0 && w.quantized() && w.layout == QuantLayout::kRows)
      << "quantized_gemm: x has " << x.cols << " columns, W is [" << n << ", " << k << "]";
  // The start of each group sum: -offset * the group's activation sum (offset 128 or 8).
  const int32_t offset = w.quant == QuantType::kInt4 ? 8 : 128;
  std::vector<int32_t> start(m * groups);
  for (int64_t i = 0; i < m * groups; ++i) {
    int32_t s = 0;
    for (int64_t j = 0; j < G; ++j) s += x.values[i * G + j];
    start[i] = -offset * s;
  }
  const int64_t panels = (n + kPanel - 1) / kPanel;
  ThreadPool::global().parallel_for(panels, 1, [&](size_t begin, size_t end) {
    thread_local std::vector<uint8_t> bytes;
    thread_local std::vector<float> scales;
    bytes.resize(static_cast<size_t>(k / 4) * kPanel * 4);
    scales.resize(static_cast<size_t>(groups) * kPanel);
    for (size_t p = begin; p < end; ++p) {
      const int64_t row0 = static_cast<int64_t>(p) * kPanel;
      const int cols = static_cast<int>(std::min<int64_t>(kPanel, n - row0));
      pack_panel(w, row0, cols, bytes.data(), scales.data());
      for (int64_t i0 = 0; i0 < m; i0 += kRows) {
        const int rows = static_cast<int>(std::min<int64_t>(kRows, m - i0));
        XRows xr;
        float* out[kRows];
        for (int i = 0; i < rows; ++i) {
          xr.values[i] = x.values.data() + (i0 + i) * k;
          xr.dx[i] = x.scales.data() + (i0 + i) * groups;
          xr.start[i] = start.data() + (i0 + i) * groups;
          out[i] = y + (i0 + i) * n + row0;
        }
        kMicroKernels[rows](xr, bytes.data(), scales.data(), groups, out, cols);
      }
    }
  });
}

}  // namespace mistral::cpu
