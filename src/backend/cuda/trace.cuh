// Timeline marks in the decode kernels, for diagnostic builds (cmake -DMISTRAL_CUDA_TRACE=ON).
// Without that option every function here is empty, so the kernels' code is unchanged (the
// default build's SASS for sm_90 is the same with and without these calls). With it, thread 0 of
// every block of a traced kernel notes the time of each of the kernel's points:
//  - the fused decode GEMV (gemv_fused.cu): 0 start, 1 wait returned, 2 prologue done, 3 end
//    (thread 0's last output stored);
//  - decode attention (attention_decode.cu): 0 start, 1 wait returned, 2 queries staged, 3 chunks
//    walked, 4 past the cluster barrier before the merge, 5 end (without the in-kernel merge, 4
//    and 5 both mark its partials stored).
// A mark is a %globaltimer read kept in shared memory, so no register holds it across the kernel
// (tests/cuda/kernel_registers.py checks the GEMV's budget in a trace build too). The block's
// records are reserved by one returning atomic before the kernel's wait (the GEMV: at its start),
// so that its round trip overlaps the wait, and written at the end by stores nothing waits for
// (trace_finish): one TraceRecord (trace_record.h) per point. TraceRecorder (trace_recorder.h)
// allocates the ring and writes it to a file; bench/cuda/trace_timeline.py turns that into
// per-layer tables.
// Header-only, included by .cu files alone; each includes it once and exports trace_attach_*.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/trace_record.h"

namespace mistral::cuda::device {

#if MISTRAL_CUDA_TRACE  // (0 when the build does not define it)
constexpr int kTraceMaxPoints = 8;
namespace {
__constant__ TraceRing* c_trace_ring;  // this translation unit's; null until attached

// Thread 0's marks so far and the block's first record, in shared memory.
struct TraceBlock {
  uint64_t ns[kTraceMaxPoints];
  uint32_t base;
};
__device__ __forceinline__ TraceBlock& trace_block() {
  __shared__ TraceBlock block;
  return block;
}
// The ring, read afresh at each use (a volatile load): a value the compiler kept from the
// kernel's start to its end would hold two registers through it.
__device__ __forceinline__ TraceRing* trace_ring() {
  return *const_cast<TraceRing* const volatile*>(&c_trace_ring);
}
__device__ __forceinline__ bool trace_thread() {
  return threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0;
}
}  // namespace

// Point `point` now: thread 0 keeps the time in shared memory (two registers, briefly).
__device__ __forceinline__ void trace_mark(int point) {
  if (!trace_thread()) return;
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  trace_block().ns[point] = t;
}
// Point 0, the kernel's first instruction.
__device__ __forceinline__ void trace_enter() { trace_mark(0); }
// Reserves `points` records for the block; called before the kernel's wait, so the atomic's
// round trip overlaps it.
__device__ __forceinline__ void trace_reserve(int points) {
  TraceRing* ring = trace_ring();
  if (!trace_thread() || ring == nullptr) return;
  trace_block().base = atomicAdd(&ring->count, static_cast<uint32_t>(points));
}
// Point `points` - 1 now, then the block's records (stores only: nothing waits for them).
__device__ __forceinline__ void trace_finish(uint16_t kernel, int points) {
  trace_mark(points - 1);
  TraceRing* ring = trace_ring();
  if (!trace_thread() || ring == nullptr) return;
  // The block index and SM read here, by volatile reads, so none is computed early and kept.
  uint32_t sm, x, y, z;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
  asm volatile("mov.u32 %0, %%ctaid.x;" : "=r"(x));
  asm volatile("mov.u32 %0, %%ctaid.y;" : "=r"(y));
  asm volatile("mov.u32 %0, %%ctaid.z;" : "=r"(z));
  const uint32_t block = x + gridDim.x * (y + gridDim.y * z);
  const TraceBlock& b = trace_block();
  for (int p = 0; p < points; ++p) {
    TraceRecord r;
    r.ns = b.ns[p];
    r.block = block;
    r.kernel = kernel;
    r.point = static_cast<uint8_t>(p);
    r.sm = static_cast<uint8_t>(sm);
    ring->records[(b.base + p) & (ring->capacity - 1)] = r;
  }
}
#else
__device__ __forceinline__ void trace_mark(int) {}
__device__ __forceinline__ void trace_enter() {}
__device__ __forceinline__ void trace_reserve(int) {}
__device__ __forceinline__ void trace_finish(uint16_t, int) {}
#endif

}  // namespace mistral::cuda::device

// Defines NAME(TraceRing*), the host function that points this translation unit's kernels at a
// ring (trace builds only; kernels.h declares the ones that exist).
#if MISTRAL_CUDA_TRACE
#define MISTRAL_CUDA_TRACE_ATTACH(NAME)                                                \
  void NAME(TraceRing* ring) {                                                         \
    MISTRAL_CUDA_CHECK(cudaMemcpyToSymbol(device::c_trace_ring, &ring, sizeof(ring))); \
  }
#else
#define MISTRAL_CUDA_TRACE_ATTACH(NAME)
#endif
