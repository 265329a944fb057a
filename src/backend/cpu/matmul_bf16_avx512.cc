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

void bf16_gemv_tile_avx512bf16(const uint16_t* x, const uint16_t* const* w, int64_t k, float* out) {
  tile<1, kBf16DecodeRows>(x, 0, w, k, out);
}

}  // namespace mistral::cpu
