// The AVX-512 VNNI kernel of int4_tiles.h. Per group of a 16-row block: four 64-byte loads; the
// low nibbles (v & 0x0f) and 16 x the high ones (v & 0xf0) go through vpdpbusd against four
// activation values broadcast from memory, into two int32 accumulators (low sums starting at the
// group's offset -8 * sum(x), high sums at 0); low + (high >> 4) is the group's exact dot product
// per row (the high sums are multiples of 16, at most 16 * 15 * 127 * 16 in magnitude), converted
// once and added times dx * dw with one FMA.
#include "backend/cpu/avx512_vnni.h"

#include "backend/cpu/int4_tiles.h"

namespace mistral::cpu {
namespace {

constexpr int64_t G = kQuantGroupSize;

// Four activation values (bytes 4c .. 4c + 3 of a group) in every lane.
MISTRAL_AVX512_VNNI inline __m512i broadcast4(const int8_t* x) {
  int32_t v;
  __builtin_memcpy(&v, x, 4);
  return _mm512_set1_epi32(v);
}

template <int MX>
MISTRAL_AVX512_VNNI void block(const Int4TileArgs& a) {
  const __m512i low = _mm512_set1_epi8(0x0f);
  const __m512i high = _mm512_set1_epi8(static_cast<char>(0xf0));
  __m512 acc[MX];
  for (int i = 0; i < MX; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t g = 0; g < a.groups; ++g) {
    const uint8_t* tile = a.values + g * 256;
    __m512i lo[4], hi[4];
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      __m512i v = _mm512_loadu_si512(tile + 64 * c);
      // One load per vector: GCC would otherwise fold it into both ANDs.
      asm("" : "+v"(v));
      lo[c] = _mm512_and_si512(v, low);
      hi[c] = _mm512_and_si512(v, high);
    }
    const __m512 dw = _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.scales + g * kInt4TileRows)));
    for (int i = 0; i < MX; ++i) {
      const int8_t* x = a.x[i] + g * G;
      __m512i sl = _mm512_set1_epi32(a.xs[i][g]);
      __m512i sh = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        sl = _mm512_dpbusd_epi32(sl, lo[c], broadcast4(x + 4 * c));
        sh = _mm512_dpbusd_epi32(sh, hi[c], broadcast4(x + G / 2 + 4 * c));
      }
      const __m512i dot = _mm512_add_epi32(sl, _mm512_srai_epi32(sh, 4));
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot),
                               _mm512_mul_ps(_mm512_set1_ps(a.dx[i][g]), dw), acc[i]);
    }
  }
  for (int i = 0; i < MX; ++i) _mm512_storeu_ps(a.y[i], acc[i]);
}

// Two blocks against one activation row; the activation broadcasts are loaded once for both.
MISTRAL_AVX512_VNNI void two_blocks(const Int4TileArgs& a) {
  const __m512i low = _mm512_set1_epi8(0x0f);
  const __m512i high = _mm512_set1_epi8(static_cast<char>(0xf0));
  const uint8_t* values[2] = {a.values, a.values2};
  const F16* scales[2] = {a.scales, a.scales2};
  __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int64_t g = 0; g < a.groups; ++g) {
    const int8_t* x = a.x[0] + g * G;
    const __m512i start = _mm512_set1_epi32(a.xs[0][g]);
    __m512i sl[2] = {start, start}, sh[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      __m512i xl = broadcast4(x + 4 * c), xh = broadcast4(x + G / 2 + 4 * c);
      asm("" : "+v"(xl), "+v"(xh));  // one broadcast each for both blocks
      for (int b = 0; b < 2; ++b) {
        __m512i v = _mm512_loadu_si512(values[b] + g * 256 + 64 * c);
        asm("" : "+v"(v));
        sl[b] = _mm512_dpbusd_epi32(sl[b], _mm512_and_si512(v, low), xl);
        sh[b] = _mm512_dpbusd_epi32(sh[b], _mm512_and_si512(v, high), xh);
      }
    }
    const __m512 dx = _mm512_set1_ps(a.dx[0][g]);
    for (int b = 0; b < 2; ++b) {
      const __m512 dw = _mm512_cvtph_ps(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales[b] + g * kInt4TileRows)));
      const __m512i dot = _mm512_add_epi32(sl[b], _mm512_srai_epi32(sh[b], 4));
      acc[b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dx, dw), acc[b]);
    }
  }
  _mm512_storeu_ps(a.y[0], acc[0]);
  _mm512_storeu_ps(a.y2, acc[1]);
}

}  // namespace

void int4_tile_block_avx512_vnni(const Int4TileArgs& a) {
  if (a.values2 != nullptr) return two_blocks(a);
  switch (a.mx) {
    case 1:
      return block<1>(a);
    case 2:
      return block<2>(a);
    case 3:
      return block<3>(a);
    default:
      return block<4>(a);
  }
}

}  // namespace mistral::cpu
