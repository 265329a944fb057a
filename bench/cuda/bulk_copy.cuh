// The Hopper (sm_90) instructions of a bulk-copy pipeline: mbarriers in shared memory and
// cp.async.bulk copies from global to shared memory that complete on one (PTX ISA 8.0). They
// compile to nothing before sm_90; callers launch their kernels only on sm_90 and later. Also the
// global counters the benchmarks' grid barriers count on (count_in, spin_until_count).
// Header-only, included by the benchmarks' .cu files alone (boundary_bench.cu,
// persistent_layer_bench.cu).
#pragma once

#include <cstdint>

namespace mistral::cuda::device {

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void barrier_init(uint32_t bar, uint32_t count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
#endif
}
__device__ __forceinline__ void barrier_init_fence() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void barrier_expect_bytes(uint32_t bar, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
#endif
}
__device__ __forceinline__ void barrier_arrive(uint32_t bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#endif
}
// %globaltimer, in ns.
__device__ __forceinline__ uint64_t now_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
// For spin loops of the benchmarks: a wait that never returns is a bug there, so after 2 s of
// spinning (checked every 1024 spins) the kernel traps, and the run fails with an error instead
// of hanging the GPU machine's call.
__device__ __forceinline__ void check_stuck(uint64_t since, uint32_t& spins) {
  if (++spins % 1024 == 0 && now_ns() - since > 2000000000ull) __trap();
}
// One thread's: adds 1 to *counter, after (release) what its block wrote before.
__device__ __forceinline__ void count_in(unsigned* counter) {
  asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counter) : "memory");
}
// One thread's: spins until *counter reaches `target` (an acquire, so what the threads that
// counted in wrote before is visible to it; the caller's block barrier passes that on).
__device__ __forceinline__ void spin_until_count(const unsigned* counter, unsigned target) {
  const uint64_t since = now_ns();
  uint32_t spins = 0;
  unsigned seen;
  for (;;) {
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(counter) : "memory");
    if (seen >= target) return;
    check_stuck(since, spins);
  }
}
__device__ __forceinline__ void barrier_wait(uint32_t bar, uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const uint64_t since = now_ns();
  uint32_t spins = 0, done = 0;
  for (;;) {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
    if (done) return;
    check_stuck(since, spins);
  }
#endif
}
__device__ __forceinline__ uint64_t l2_policy(bool evict_first) {
  uint64_t policy = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (evict_first) {
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  } else {
    asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;\n" : "=l"(policy));
  }
#endif
  return policy;
}
__device__ __forceinline__ void bulk_copy(uint32_t dst, const void* src, uint32_t bytes,
                                          uint32_t bar, uint64_t policy) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
      " [%0], [%1], %2, [%3], %4;\n" ::"r"(dst),
      "l"(src), "r"(bytes), "r"(bar), "l"(policy)
      : "memory");
#endif
}

}  // namespace mistral::cuda::device
