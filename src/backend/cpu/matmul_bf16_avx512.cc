#include "backend/cpu/matmul_bf16_avx512.h"

// GCC 12's intrinsic headers trip its own uninitialized-variable warnings (_mm512_undefined_*).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

namespace mistral::cpu {

void arrange_even_odd(const float* x, int64_t k, std::vector<float>* out) {
  const int64_t chunks = (k + 31) / 32;
  out->assign(chunks * 32, 0.0f);
  for (int64_t i = 0; i < k; ++i) {
    (*out)[(i / 32) * 32 + (i % 2) * 16 + (i % 32) / 2] = x[i];
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void bf16_dot_1x4_avx512(
    const float* x, const uint16_t* const* w, int64_t k, float* out) {
  const __m512i high_halves = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  __m512 even[4], odd[4];
  for (int r = 0; r < 4; ++r) even[r] = odd[r] = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; i += 32) {
    const int64_t left = k - i;
    const __mmask32 mask = left >= 32 ? ~0u : (1u << left) - 1;
    const __m512 xe = _mm512_loadu_ps(x + i);
    const __m512 xo = _mm512_loadu_ps(x + i + 16);
    for (int r = 0; r < 4; ++r) {
      const __m512i v = _mm512_maskz_loadu_epi16(mask, w[r] + i);
      even[r] = _mm512_fmadd_ps(xe, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), even[r]);
      odd[r] = _mm512_fmadd_ps(xo, _mm512_castsi512_ps(_mm512_and_si512(v, high_halves)), odd[r]);
    }
  }
  for (int r = 0; r < 4; ++r) out[r] = _mm512_reduce_add_ps(_mm512_add_ps(even[r], odd[r]));
}

}  // namespace mistral::cpu
