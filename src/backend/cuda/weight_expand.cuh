// Device pieces shared by the tensor-core kernels that expand int8 / int4 weights in registers
// (gemv.cu, gemm_mixed.cu): exact small-integer expansion to bf16 by byte permutes, and the
// cp.async copies that stage their operands in shared memory. Header-only, included by .cu files
// alone.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/device_util.cuh"

namespace mistral::cuda::device {

// bf16 constants as bf16x2 bit patterns (the upper 16 bits of the float32 pattern).
constexpr uint32_t kBf16x2_128 = 0x43004300u;  // 128.0: 128 + v is exact for 0 <= v < 128
constexpr uint32_t kBf16x2_136 = 0x43084308u;  // 136.0 = 128 + 8
constexpr uint32_t kBf16x2_16 = 0x41804180u;   // 16.0
constexpr uint32_t kMagicBytes = 0x43434343u;  // the high byte of 128.0, in every byte

__device__ __forceinline__ uint32_t bf16x2_sub(uint32_t a, uint32_t b) {
  return as_u32(__hsub2(as_bf162(a), as_bf162(b)));
}
// Bytes 0, 1 (or 2, 3) of v, each below 128, as bf16x2 (128 + byte): one byte permute that puts
// 0x43 above each byte.
__device__ __forceinline__ uint32_t magic01(uint32_t v) { return prmt(v, kMagicBytes, 0x4140); }
__device__ __forceinline__ uint32_t magic23(uint32_t v) { return prmt(v, kMagicBytes, 0x4342); }

// int8 q as bf16 pairs, exactly: with u = q + 128 = 16 uh + ul, q = 16 (uh - 8) + ul.
__device__ __forceinline__ uint32_t int8_pair(uint32_t hi_magic, uint32_t lo_magic) {
  const uint32_t uh8 = bf16x2_sub(hi_magic, kBf16x2_136);
  const uint32_t ul = bf16x2_sub(lo_magic, kBf16x2_128);
  return as_u32(__hfma2(as_bf162(uh8), as_bf162(kBf16x2_16), as_bf162(ul)));
}

// 8 bytes global -> shared without registers, through L1 (the L1-bypassing form takes only 16-byte
// copies); zero-filled when !ok.
__device__ __forceinline__ void cp_async8(void* smem, const void* gmem, bool ok) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(ok ? 8 : 0)
               : "memory");
}
// 16 bytes global -> shared without registers, bypassing L1; zero-filled when !ok.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool ok) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(ok ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

}  // namespace mistral::cuda::device
