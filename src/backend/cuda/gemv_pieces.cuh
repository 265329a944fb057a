// Device pieces shared by the row-streaming decode GEMVs (gemv_rows.cu, gemv_fused.cu): a warp
// streams one row of W in 16-byte pieces, lane taking pieces lane, lane + 32, ..., L of them in
// flight at a time; quantized rows take their f16 group scales with the pieces. Header-only,
// included by .cu files alone.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "backend/cuda/device_util.cuh"

namespace mistral::cuda::device {

constexpr int kRowWarps = 8;          // per block, each on its own row of W
constexpr int kRowLoadsInFlight = 4;  // 16-byte loads per lane before the first use

// Pieces base + i * 32 + lane (i < L) of a row of `pieces` 16-byte pieces (zero past it).
template <int L>
__device__ __forceinline__ void load_pieces(const uint4* row, int pieces, int base, int lane,
                                            uint4 (&out)[L]) {
#pragma unroll
  for (int i = 0; i < L; ++i) {
    const int c = base + i * 32 + lane;
    out[i] = c < pieces ? load_stream16(row + c) : make_uint4(0, 0, 0, 0);
  }
}

// The scales of the same pieces' groups (group_of(piece)).
template <int L, typename GroupOf>
__device__ __forceinline__ void load_scales(const __half* row_scales, int pieces, int base,
                                            int lane, GroupOf group_of, __half (&out)[L]) {
#pragma unroll
  for (int i = 0; i < L; ++i) {
    const int c = base + i * 32 + lane;
    out[i] = c < pieces ? load_stream_half(row_scales + group_of(c)) : __half();
  }
}

// acc + the sum of the 16 byte products of w and x (signed bytes).
__device__ __forceinline__ int dot16(uint4 w, uint4 x, int acc) {
  acc = __dp4a(int(w.x), int(x.x), acc);
  acc = __dp4a(int(w.y), int(x.y), acc);
  acc = __dp4a(int(w.z), int(x.z), acc);
  return __dp4a(int(w.w), int(x.w), acc);
}

// The low and the high nibbles of the 16 bytes of an int4 piece, each as a byte.
__device__ __forceinline__ void split_nibbles(uint4 w, uint4& lo, uint4& hi) {
  constexpr uint32_t kLow = 0x0f0f0f0fu;
  lo = make_uint4(w.x & kLow, w.y & kLow, w.z & kLow, w.w & kLow);
  hi = make_uint4((w.x >> 4) & kLow, (w.y >> 4) & kLow, (w.z >> 4) & kLow, (w.w >> 4) & kLow);
}

// acc + the products of a bf16 piece of W and 8 values of x, element after element in float32.
__device__ __forceinline__ float dot_bf16_piece(uint4 w, uint4 x, float acc) {
  const __nv_bfloat16* we = reinterpret_cast<const __nv_bfloat16*>(&w);
  const __nv_bfloat16* xe = reinterpret_cast<const __nv_bfloat16*>(&x);
#pragma unroll
  for (int e = 0; e < 8; ++e) acc = fmaf(__bfloat162float(we[e]), __bfloat162float(xe[e]), acc);
  return acc;
}

// x quantized per group of 32 for int8 / int4 weights, the CPU backend's rule (core/quant.h):
// xq = round-half-even(x * 127 / max|x|), dx = max|x| / 127 (0 and 0 for a group of zeros).
// N values with max|x| = amax (of their whole group) into N / 4 words of signed bytes, the first
// value in the low byte; sum gets the xq added.
// The four bytes of a word are packed by two byte permutes (|q| <= 127, so a byte holds q), and
// their sum is one dp4a against ones.
template <int N>
__device__ __forceinline__ void quantize_x_values(const float (&v)[N], float amax,
                                                  uint32_t (&words)[N / 4], int& sum) {
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
#pragma unroll
  for (int w = 0; w < N / 4; ++w) {
    int q[4];
#pragma unroll
    for (int b = 0; b < 4; ++b) q[b] = __float2int_rn(v[w * 4 + b] * inv);
    const uint32_t low = __byte_perm(q[0], q[1], 0x0040), high = __byte_perm(q[2], q[3], 0x0040);
    words[w] = __byte_perm(low, high, 0x5410);
    sum = __dp4a(int(words[w]), 0x01010101, sum);
  }
}
__device__ __forceinline__ float x_group_scale(float amax) { return amax / 127.0f; }

}  // namespace mistral::cuda::device
