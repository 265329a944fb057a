#include "backend/cpu/matmul_bf16_avx512.h"

// GCC 12's intrinsic headers trip its own uninitialized-variable warnings (_mm512_undefined_*).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

namespace mistral::cpu {
namespace {

#define MISTRAL_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// MR x NR accumulators of 16 lanes; each step of 32 values loads NR weight and MR activation
// vectors for MR * NR vdpbf16ps. The sums are reduced across lanes once, at the end.
template <int MR, int NR>
MISTRAL_AVX512_BF16 void tile(const uint16_t* x, int64_t x_stride, const uint16_t* const* w,
                              int64_t k, float* out) {
  __m512 acc[MR][NR];
  for (int a = 0; a < MR; ++a) {
    for (int r = 0; r < NR; ++r) acc[a][r] = _mm512_setzero_ps();
  }
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    __m512bh wv[NR];
    for (int r = 0; r < NR; ++r) wv[r] = (__m512bh)_mm512_loadu_si512(w[r] + i);
    for (int a = 0; a < MR; ++a) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + a * x_stride + i);
      for (int r = 0; r < NR; ++r) acc[a][r] = _mm512_dpbf16_ps(acc[a][r], xv, wv[r]);
    }
  }
  if (i < k) {  // the activations are zero-padded; the weights must not be read past k
    const __mmask32 mask = (1u << (k - i)) - 1;
    __m512bh wv[NR];
    for (int r = 0; r < NR; ++r) wv[r] = (__m512bh)_mm512_maskz_loadu_epi16(mask, w[r] + i);
    for (int a = 0; a < MR; ++a) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + a * x_stride + i);
      for (int r = 0; r < NR; ++r) acc[a][r] = _mm512_dpbf16_ps(acc[a][r], xv, wv[r]);
    }
  }
  for (int a = 0; a < MR; ++a) {
    for (int r = 0; r < NR; ++r) out[a * NR + r] = _mm512_reduce_add_ps(acc[a][r]);
  }
}

template <int R>
MISTRAL_AVX512_BF16 void gemv_rows(const uint16_t* x, const uint16_t* const* w, int64_t k,
                                   float* out) {
  __m512 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 64 <= k; i += 64) {
    const __m512bh x0 = (__m512bh)_mm512_loadu_si512(x + i);
    const __m512bh x1 = (__m512bh)_mm512_loadu_si512(x + i + 32);
    for (int r = 0; r < R; ++r) {
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x0, (__m512bh)_mm512_loadu_si512(w[r] + i));
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x1, (__m512bh)_mm512_loadu_si512(w[r] + i + 32));
    }
  }
  for (; i < k; i += 32) {  // the activations are zero-padded; the weights must not be read past k
    const __mmask32 mask = k - i >= 32 ? ~0u : (1u << (k - i)) - 1;
    const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + i);
    for (int r = 0; r < R; ++r) {
      acc[r][0] =
          _mm512_dpbf16_ps(acc[r][0], xv, (__m512bh)_mm512_maskz_loadu_epi16(mask, w[r] + i));
    }
  }
  for (int r = 0; r < R; ++r) out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
}

template <int MR>
void tile_mr(const uint16_t* x, int64_t x_stride, int mx, const uint16_t* const* w, int64_t k,
             float* out) {
  if constexpr (MR > 1) {
    if (mx < MR) return tile_mr<MR - 1>(x, x_stride, mx, w, k, out);
  }
  tile<MR, kBf16TileRows>(x, x_stride, w, k, out);
}

}  // namespace

void bf16_tile_avx512bf16(const uint16_t* x, int64_t x_stride, int mx, const uint16_t* const* w,
                          int64_t k, float* out) {
  tile_mr<kBf16TileActivations>(x, x_stride, mx, w, k, out);
}

void bf16_gemv_rows_avx512bf16(const uint16_t* x, int rows, const uint16_t* const* w, int64_t k,
                               float* out) {
  return rows == 2 ? gemv_rows<2>(x, w, k, out) : gemv_rows<1>(x, w, k, out);
}

}  // namespace mistral::cpu
