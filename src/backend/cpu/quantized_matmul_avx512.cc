// The AVX-512 VNNI tile kernels of quantized_matmul.h. One vpdpbusd multiplies unsigned weight
// bytes with the signed int8 activations, four products per int32 lane:
//   int8 weights are made unsigned by adding 128 (xor 0x80); int4 nibbles are unsigned already
//     (value + 8). The offset is removed by starting each lane's sum at -offset * (the sum of the
//     activations it meets), computed once per activation row and step;
//   every int32 lane belongs to one group, so the result is converted to float and scaled by
//     dx * dw per lane, the 16 per-group scales of a block loaded at once and spread by vpermps.
// Horizontal sums happen once per output at the end.
#include "backend/cpu/avx512_vnni.h"

#include <algorithm>

#include "backend/cpu/quantized_matmul.h"

namespace mistral::cpu {
namespace {

constexpr int64_t G = kQuantGroupSize;

// Unsigned int8 weight bytes (value + 128) of groups g, g + 1 (or g alone when `single`).
MISTRAL_AVX512_VNNI inline __m512i load_int8_weights(const uint8_t* row, int64_t g, bool single) {
  const __m512i v = single ? _mm512_maskz_loadu_epi8(0xffffffffull, row + g * G)
                           : _mm512_loadu_si512(row + g * G);
  return _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80)));
}

// 16 F16 scales from `s` (fewer at the end of a row, the rest zero) as floats.
MISTRAL_AVX512_VNNI inline __m512 load_scales(const F16* s, int64_t count) {
  const __mmask16 mask = count >= 16 ? 0xffff : static_cast<__mmask16>((1u << count) - 1);
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, s));
}

MISTRAL_AVX512_VNNI inline __m512 load_floats(const float* s, int64_t count) {
  const __mmask16 mask = count >= 16 ? 0xffff : static_cast<__mmask16>((1u << count) - 1);
  return _mm512_maskz_loadu_ps(mask, s);
}

// int8 weights: two groups (64 bytes) per step; lanes 0-7 belong to group g, 8-15 to g + 1.
template <int MX>
MISTRAL_AVX512_VNNI void tile_int8(const QuantTile& t, float* out) {
  constexpr int offset = 128;
  const __m512i offset_bytes = _mm512_set1_epi8(static_cast<char>(offset));
  const int64_t groups = t.k / G;
  const __m512i halves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  __m512 acc[MX][4];
  for (int i = 0; i < MX; ++i) {
    for (int r = 0; r < 4; ++r) acc[i][r] = _mm512_setzero_ps();
  }
  for (int64_t g16 = 0; g16 < groups; g16 += 16) {  // 16 groups: one vector of scales
    const int64_t left = groups - g16;
    __m512 sw[4], sx[MX];
    for (int r = 0; r < 4; ++r) sw[r] = load_scales(t.dw[r] + g16, left);
    for (int i = 0; i < MX; ++i) sx[i] = load_floats(t.dx[i] + g16, left);
    const int64_t steps = left >= 16 ? 8 : (left + 1) / 2;
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t g = g16 + 2 * s;
      const bool single = g + 1 >= groups;
      // Lanes 0-7 take group g's scale, lanes 8-15 group g+1's.
      const __m512i spread = _mm512_add_epi32(halves, _mm512_set1_epi32(static_cast<int>(2 * s)));
      __m512i wv[4];
      __m512 dw[4];
      for (int r = 0; r < 4; ++r) {
        wv[r] = load_int8_weights(t.w[r], g, single);
        dw[r] = _mm512_permutexvar_ps(spread, sw[r]);
      }
      for (int i = 0; i < MX; ++i) {
        const int8_t* xrow = t.xq[i] + g * G;
        const __m512i xv =
            single ? _mm512_maskz_loadu_epi8(0xffffffffull, xrow) : _mm512_loadu_si512(xrow);
        const __m512i start = _mm512_sub_epi32(
            _mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset_bytes, xv));
        const __m512 dx = _mm512_permutexvar_ps(spread, sx[i]);
        for (int r = 0; r < 4; ++r) {
          const __m512i dot = _mm512_dpbusd_epi32(start, wv[r], xv);
          acc[i][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dx, dw[r]), acc[i][r]);
        }
      }
    }
  }
  for (int i = 0; i < MX; ++i) {
    for (int r = 0; r < 4; ++r) out[i * 4 + r] = _mm512_reduce_add_ps(acc[i][r]);
  }
}

// int4 weights: four groups (64 bytes) per step. The low nibbles of the 64 bytes are values
// 0..15 of the four groups, the high nibbles values 16..31, so the unpacking is two ANDs and a
// shift, and the activations come in the matching order (arrange_for_int4): 64 bytes of values
// 0..15 of the four groups, then 64 bytes of values 16..31. Lanes 4j..4j+3 belong to group j of
// the step in both halves, so both vpdpbusd go into one accumulator.
template <int MX>
MISTRAL_AVX512_VNNI void tile_int4(const QuantTile& t, float* out) {
  const __m512i offset_bytes = _mm512_set1_epi8(8);
  const __m512i low_nibbles = _mm512_set1_epi8(0x0f);
  const int64_t groups = t.k / G;
  const __m512i quarters = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  __m512 acc[MX][4];
  for (int i = 0; i < MX; ++i) {
    for (int r = 0; r < 4; ++r) acc[i][r] = _mm512_setzero_ps();
  }
  for (int64_t g16 = 0; g16 < groups; g16 += 16) {
    const int64_t left = groups - g16;
    __m512 sw[4], sx[MX];
    for (int r = 0; r < 4; ++r) sw[r] = load_scales(t.dw[r] + g16, left);
    for (int i = 0; i < MX; ++i) sx[i] = load_floats(t.dx[i] + g16, left);
    const int64_t steps = left >= 16 ? 4 : (left + 3) / 4;
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t g = g16 + 4 * s;
      const int64_t in_step = std::min<int64_t>(4, groups - g);
      const __mmask64 bytes = in_step == 4 ? ~0ull : (1ull << (16 * in_step)) - 1;
      const __m512i spread = _mm512_add_epi32(quarters, _mm512_set1_epi32(static_cast<int>(4 * s)));
      __m512i lo[4], hi[4];
      __m512 dw[4];
      for (int r = 0; r < 4; ++r) {
        const __m512i b = _mm512_maskz_loadu_epi8(bytes, t.w[r] + g * (G / 2));
        lo[r] = _mm512_and_si512(b, low_nibbles);
        hi[r] = _mm512_and_si512(_mm512_srli_epi16(b, 4), low_nibbles);
        dw[r] = _mm512_permutexvar_ps(spread, sw[r]);
      }
      for (int i = 0; i < MX; ++i) {
        const int8_t* xs = t.xq[i] + g * G;  // arranged: 64 low-half values, 64 high-half values
        const __m512i xlo = _mm512_loadu_si512(xs);
        const __m512i xhi = _mm512_loadu_si512(xs + 2 * G);
        const __m512i sum = _mm512_dpbusd_epi32(
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset_bytes, xlo), offset_bytes, xhi);
        const __m512i start = _mm512_sub_epi32(_mm512_setzero_si512(), sum);
        const __m512 dx = _mm512_permutexvar_ps(spread, sx[i]);
        for (int r = 0; r < 4; ++r) {
          const __m512i dot =
              _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(start, lo[r], xlo), hi[r], xhi);
          acc[i][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dx, dw[r]), acc[i][r]);
        }
      }
    }
  }
  for (int i = 0; i < MX; ++i) {
    for (int r = 0; r < 4; ++r) out[i * 4 + r] = _mm512_reduce_add_ps(acc[i][r]);
  }
}

// R rows of one decode call: per step 64 weight bytes of each row (int8: 2 groups, made unsigned
// by xor 0x80; int4: 4 groups, low nibbles values 0..15 and high ones 16..31), vpdpbusd from the
// prepared start, then times dx * dw per lane; the rows share the activation loads. dx * dw is
// formed once per block of 16 groups and spread to the lanes by one vpermps per step.
// The empty asm statements keep the activations and each weight vector in registers: GCC would
// fold them into every instruction that reads them as memory operands, loading them again per
// row (int4 weights twice), and the loads, not the arithmetic, would bound the kernel (36.8 ->
// 43.5 GB/s on one Zen 4 core with the rows in L2).
template <int R, bool kInt4>
MISTRAL_AVX512_VNNI __attribute__((always_inline)) inline void decode_step(
    const DecodeRow& x, const uint8_t* const* w, int64_t s, int64_t j, __mmask64 bytes,
    const __m512* scale, __m512* acc) {
  constexpr int64_t per_step = kInt4 ? 4 : 2;  // groups
  constexpr int64_t step_bytes = 64, step_values = per_step * G;
  const __m512i low_nibbles = _mm512_set1_epi8(0x0f);
  const __m512i sign_bits = _mm512_set1_epi8(static_cast<char>(0x80));
  // Lane l of a step belongs to the step's group l / (16 / per_step).
  const __m512i lane_group = kInt4
                                 ? _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0)
                                 : _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  const int8_t* xs = x.values.data() + s * step_values;
  __m512i start = _mm512_loadu_si512(x.start.data() + s * 16);
  __m512i x0 = _mm512_loadu_si512(xs);
  __m512i x1 = kInt4 ? _mm512_loadu_si512(xs + 64) : x0;
  asm("" : "+v"(start), "+v"(x0), "+v"(x1));
  const __m512i spread =
      _mm512_add_epi32(lane_group, _mm512_set1_epi32(static_cast<int>(per_step * j)));
  for (int r = 0; r < R; ++r) {
    __m512i b = _mm512_maskz_loadu_epi8(bytes, w[r] + s * step_bytes);
    asm("" : "+v"(b));
    __m512i dot;
    if constexpr (kInt4) {
      const __m512i lo = _mm512_and_si512(b, low_nibbles);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(b, 4), low_nibbles);
      dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(start, lo, x0), hi, x1);
    } else {
      dot = _mm512_dpbusd_epi32(start, _mm512_xor_si512(b, sign_bits), x0);
    }
    acc[r] =
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(spread, scale[r]), acc[r]);
  }
}

// R rows of one decode call: per step 64 weight bytes of each row (int8: 2 groups, made unsigned
// by xor 0x80; int4: 4 groups, low nibbles values 0..15 and high ones 16..31), vpdpbusd from the
// prepared start, then times dx * dw per lane; the rows share the activation loads. dx * dw is
// formed once per block of 16 groups and spread to the lanes by one vpermps per step; whole
// blocks run without masks.
// The empty asm statements keep the activations and each weight vector in registers: GCC would
// fold them into every instruction that reads them as memory operands, loading them again per
// row (int4 weights twice), and the loads, not the arithmetic, would bound the kernel (36.8 ->
// 43.5 GB/s on one Zen 4 core with the rows in L2).
template <int R, bool kInt4>
MISTRAL_AVX512_VNNI void decode_rows(const DecodeRow& x, const uint8_t* const* w,
                                     const F16* const* dw, float* out) {
  constexpr int64_t per_step = kInt4 ? 4 : 2;  // groups
  const int64_t groups = x.groups;
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t g16 = 0; g16 < groups; g16 += 16) {
    const int64_t left = groups - g16;
    const __m512 dx = _mm512_loadu_ps(x.scale.data() + g16);  // zero-padded to 16
    __m512 scale[R];
    for (int r = 0; r < R; ++r) scale[r] = _mm512_mul_ps(load_scales(dw[r] + g16, left), dx);
    if (left >= 16) {
      for (int64_t j = 0; j < 16 / per_step; ++j) {
        decode_step<R, kInt4>(x, w, g16 / per_step + j, j, ~0ull, scale, acc);
      }
      continue;
    }
    for (int64_t j = 0; j * per_step < left; ++j) {
      const int64_t in_step = std::min<int64_t>(per_step, left - j * per_step);
      const __mmask64 bytes = in_step == per_step ? ~0ull : (1ull << (in_step * 64 / per_step)) - 1;
      decode_step<R, kInt4>(x, w, g16 / per_step + j, j, bytes, scale, acc);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = _mm512_reduce_add_ps(acc[r]);
}

}  // namespace

void decode_rows_avx512_vnni(const DecodeRow& x, int rows, const uint8_t* const* w,
                             const F16* const* dw, float* out) {
  if (x.type == QuantType::kInt4) {
    return rows == 2 ? decode_rows<2, true>(x, w, dw, out) : decode_rows<1, true>(x, w, dw, out);
  }
  return rows == 2 ? decode_rows<2, false>(x, w, dw, out) : decode_rows<1, false>(x, w, dw, out);
}

#define MISTRAL_DISPATCH_MX(kernel, t, out) \
  switch ((t).mx) {                         \
    case 1:                                 \
      return kernel<1>(t, out);             \
    case 2:                                 \
      return kernel<2>(t, out);             \
    case 3:                                 \
      return kernel<3>(t, out);             \
    default:                                \
      return kernel<4>(t, out);             \
  }

void quant_tile_avx512_vnni(const QuantTile& t, float* out) {
  if (t.type == QuantType::kInt8) {
    MISTRAL_DISPATCH_MX(tile_int8, t, out);
  } else {
    MISTRAL_DISPATCH_MX(tile_int4, t, out);
  }
}

}  // namespace mistral::cpu
