// Device-side helpers shared by the kernels: the bf16 tensor-core mma, byte permutes, cache-hinted
// loads and warp reductions. Header-only, included by .cu files alone.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace mistral::cuda::device {

constexpr unsigned kFullMask = 0xffffffffu;

// Programmatic dependent launch (sm_90 and later; no-ops before). Every kernel started through
// launch_kernel (kernel_launch.h) may begin while the kernel before it in the stream still runs,
// so it must call wait_for_prior_kernels() before it reads anything an earlier kernel wrote and
// before it writes anything, and every thread must call it (also one that exits early: a kernel
// completes only after its wait, which keeps the chain of completions in stream order). What it
// does before the wait may only read memory no kernel in the stream writes (weights), or, as
// decode attention does with the cache and its tables, memory whose concurrent writes it
// provably never uses (attention_decode.cu says why).
// allow_next_kernel() lets the next kernel's blocks be scheduled (they wait in turn); called
// first thing, since the next kernel waits for this one's completion anyway (decode attention
// calls it once its queries are staged instead: attention_decode.cu says why).
__device__ __forceinline__ void wait_for_prior_kernels() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_next_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
// Both, for kernels that read nothing before their inputs.
__device__ __forceinline__ void begin_after_prior_kernels() {
  allow_next_kernel();
  wait_for_prior_kernels();
}

// D = A * B + C for one warp, m16n8k16, bf16 inputs, float32 accumulation. Fragments (PTX ISA,
// "mma.m16n8k16"), with g = lane / 4 and t = lane % 4:
//   a[0]: A[g][2t, 2t+1]    a[1]: A[g+8][2t, 2t+1]  a[2]: A[g][2t+8, 2t+9]  a[3]: A[g+8][2t+8,
//   2t+9] b[0]: B[2t, 2t+1][g]    b[1]: B[2t+8, 2t+9][g] c[0], c[1]: C[g][2t, 2t+1] c[2], c[3]:
//   C[g+8][2t, 2t+1]
// Each b32 register holds two bf16, the lower column (or k) in the low half.
__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4],
                                               const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t selector) {
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(selector));
  return r;
}

// The L2 policy for bytes read once per step (the weights): evict first, so what a step reads
// again (the KV cache, its tables, the activations) stays in L2 while gigabytes of weights pass
// through it (sm_80 and later). Not volatile, so the compiler may compute it once per kernel.
__device__ __forceinline__ uint64_t evict_first_policy() {
  uint64_t policy;
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}

// 16 bytes that are read once: no L1 allocation, so L1 keeps what is reused (the activations),
// and evicted first from L2 (evict_first_policy).
__device__ __forceinline__ uint4 load_stream16(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p), "l"(evict_first_policy()));
  return r;
}

// 2 bytes read once (a weight group's scale), with the same L2 policy.
__device__ __forceinline__ __half load_stream_half(const __half* p) {
  unsigned short bits;
  asm volatile("ld.global.nc.L2::cache_hint.u16 %0, [%1], %2;\n"
               : "=h"(bits)
               : "l"(p), "l"(evict_first_policy()));
  return __ushort_as_half(bits);
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ __nv_bfloat162 as_bf162(uint32_t v) {
  return *reinterpret_cast<const __nv_bfloat162*>(&v);
}

// 8 bf16 (16 bytes, the first in the low half of .x) and 8 floats: exact one way, rounded to
// nearest even the other.
__device__ __forceinline__ void unpack_bf16x8(uint4 raw, float (&f)[8]) {
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 pair = __bfloat1622float2(as_bf162(words[i]));
    f[2 * i] = pair.x;
    f[2 * i + 1] = pair.y;
  }
}
__device__ __forceinline__ uint4 pack_bf16x8(const float (&f)[8]) {
  return make_uint4(pack_bf16x2(f[0], f[1]), pack_bf16x2(f[2], f[3]), pack_bf16x2(f[4], f[5]),
                    pack_bf16x2(f[6], f[7]));
}
__device__ __forceinline__ uint32_t as_u32(__nv_bfloat162 v) {
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// The sum of v over a block of Threads threads, the same in every thread and on every run: warp
// sums, then the warps' sums in warp order. Once per kernel (its shared slots are not reused).
template <int Threads>
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[Threads / 32];
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float total = 0.0f;
#pragma unroll
  for (int w = 0; w < Threads / 32; ++w) total += partial[w];
  return total;
}

// Conversions between T (float or bf16) and float, for kernels templated on the activation type.
template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Rounds v to T and back: identity for float, bf16 rounding for bf16.
template <typename T>
__device__ __forceinline__ float round_to(float v) {
  return to_float<T>(from_float<T>(v));
}

// rotate_half rotary embeddings on one pair (a, b) = (v_i, v_{i + half}) held as floats, with
// c and s the cos and sin of the pair's angle already rounded to T: the rotated pair, each value
// rounded to T. Products and sums are rounded one by one to T (no fused multiply-add), as torch's
// separate bf16 ops round them.
template <typename T>
__device__ __forceinline__ void rotate_values(float& a, float& b, float c, float s) {
  const float ac = round_to<T>(__fmul_rn(a, c)), bs = round_to<T>(__fmul_rn(b, s));
  const float bc = round_to<T>(__fmul_rn(b, c)), as = round_to<T>(__fmul_rn(a, s));
  a = round_to<T>(__fsub_rn(ac, bs));
  b = round_to<T>(__fadd_rn(bc, as));
}

// cos and sin of rope's angle for pair i at position pos, rounded to T (rotate_values' c, s).
template <typename T>
__device__ __forceinline__ void rope_angle(float pos, float inv_freq_i, float& c, float& s) {
  sincosf(__fmul_rn(pos, inv_freq_i), &s, &c);
  c = round_to<T>(c);
  s = round_to<T>(s);
}

// Rotates the pair (i, i + half) of one head's vector v in place at position pos (rotate_values).
template <typename T>
__device__ __forceinline__ void rotate_pair(T* v, int64_t i, int64_t half, float pos,
                                            const float* __restrict__ inv_freq) {
  float c, s;
  rope_angle<T>(pos, inv_freq[i], c, s);
  float a = to_float(v[i]), b = to_float(v[i + half]);
  rotate_values<T>(a, b, c, s);
  v[i] = from_float<T>(a);
  v[i + half] = from_float<T>(b);
}

}  // namespace mistral::cuda::device
