// row_dot / row_axpy: attention's inner loops over one cached key or value row, read in the
// cache's storage type (F32, BF16, F16, I8) and widened in registers. On AVX-512 machines
// (cpu_features) 16 values are widened per instruction (vcvtph2ps for F16, which GCC does not
// generate from plain C++); elsewhere the portable loops are auto-vectorized for each instruction
// set.
//
// Built with -ffp-contract=off (src/backend/CMakeLists.txt): row_axpy rounds each product before
// adding, so an F32 cache gives exactly what a plain multiply-then-add loop gives.
#include <immintrin.h>

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which -Wuninitialized reports
// falsely once inlined (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "backend/cpu/cpu_features.h"
#include "backend/cpu/ops.h"
#include "core/check.h"
#include "core/half.h"

namespace mistral::cpu {
namespace {

inline float widen(float v) { return v; }
inline float widen(BF16 v) { return bf16_to_float(v); }
inline float widen(F16 v) { return f16_bits_to_float(v.bits); }
inline float widen(int8_t v) { return static_cast<float>(v); }

template <typename T>
__attribute__((always_inline)) inline float dot_portable(const float* x, const T* r, int64_t n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += x[i] * widen(r[i]);
  return s;
}

template <typename T>
__attribute__((always_inline)) inline void axpy_portable(float a, const T* r, int64_t n, float* y) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * widen(r[i]);
}

__attribute__((target("avx512f"))) inline __m512 load16(const BF16* p) {
  const __m512i wide =
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
__attribute__((target("avx512f"))) inline __m512 load16(const F16* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
__attribute__((target("avx512f"))) inline __m512 load16(const int8_t* p) {
  return _mm512_cvtepi32_ps(
      _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

template <typename T>
__attribute__((target("avx512f"))) float dot_avx512(const float* x, const T* r, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), load16(r + i), acc);
  float s = _mm512_reduce_add_ps(acc);
  for (; i < n; ++i) s += x[i] * widen(r[i]);
  return s;
}

template <typename T>
__attribute__((target("avx512f"))) void axpy_avx512(float a, const T* r, int64_t n, float* y) {
  const __m512 va = _mm512_set1_ps(a);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(y + i,
                     _mm512_add_ps(_mm512_loadu_ps(y + i), _mm512_mul_ps(va, load16(r + i))));
  }
  for (; i < n; ++i) y[i] += a * widen(r[i]);
}

__attribute__((target_clones("avx512f", "avx2", "default"))) float row_dot_portable(const float* x,
                                                                                    const void* row,
                                                                                    DType dtype,
                                                                                    int64_t n) {
  switch (dtype) {
    case DType::kF32:
      return dot_f32(x, static_cast<const float*>(row), n);
    case DType::kBF16:
      return dot_portable(x, static_cast<const BF16*>(row), n);
    case DType::kF16:
      return dot_portable(x, static_cast<const F16*>(row), n);
    case DType::kI8:
      return dot_portable(x, static_cast<const int8_t*>(row), n);
    default:
      MISTRAL_CHECK(false) << "row_dot: unsupported dtype " << dtype_name(dtype);
  }
  return 0;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void row_axpy_portable(
    float a, const void* row, DType dtype, int64_t n, float* y) {
  switch (dtype) {
    case DType::kF32:
      return axpy_portable(a, static_cast<const float*>(row), n, y);
    case DType::kBF16:
      return axpy_portable(a, static_cast<const BF16*>(row), n, y);
    case DType::kF16:
      return axpy_portable(a, static_cast<const F16*>(row), n, y);
    case DType::kI8:
      return axpy_portable(a, static_cast<const int8_t*>(row), n, y);
    default:
      MISTRAL_CHECK(false) << "row_axpy: unsupported dtype " << dtype_name(dtype);
  }
}

}  // namespace

float row_dot(const float* x, const void* row, DType dtype, int64_t n) {
  if (dtype == DType::kF32) return dot_f32(x, static_cast<const float*>(row), n);
  if (cpu_features().avx512f) {
    switch (dtype) {
      case DType::kBF16:
        return dot_avx512(x, static_cast<const BF16*>(row), n);
      case DType::kF16:
        return dot_avx512(x, static_cast<const F16*>(row), n);
      case DType::kI8:
        return dot_avx512(x, static_cast<const int8_t*>(row), n);
      default:
        break;
    }
  }
  return row_dot_portable(x, row, dtype, n);
}

void row_axpy(float a, const void* row, DType dtype, int64_t n, float* y) {
  if (cpu_features().avx512f) {
    switch (dtype) {
      case DType::kBF16:
        return axpy_avx512(a, static_cast<const BF16*>(row), n, y);
      case DType::kF16:
        return axpy_avx512(a, static_cast<const F16*>(row), n, y);
      case DType::kI8:
        return axpy_avx512(a, static_cast<const int8_t*>(row), n, y);
      default:
        break;  // F32: the portable loop's AVX-512 clone
    }
  }
  row_axpy_portable(a, row, dtype, n, y);
}

}  // namespace mistral::cpu
