// boundary_bench: what one kernel boundary costs in a chain of programmatic dependent launches
// (sm_90), and whether a handoff through a counter costs less than griddepcontrol.wait.
// Each kernel of a chain of 320: 2 blocks per SM x 512 threads (the decode GEMVs' grid), its first
// weight loads issued before it waits, then all of x (16 KB, the kernel before it's output) read
// and summed, `bytes` of a 2 GB buffer streamed, and its part of y written. Modes:
//  - griddep.wait: griddepcontrol.wait before reading x;
//  - counter spin: each block's thread 0 spins on a counter that every block of the kernel before
//    it bumps (red.release.gpu) as it ends; griddepcontrol.wait at the end keeps completions in
//    stream order.
// Each chain is launched from the host kernel by kernel, and as a captured CUDA graph.
// Then the same chain as one persistent kernel ("persistent"): its blocks (as many, all resident:
// a cooperative launch) run the 320 steps in turn, a grid barrier between steps (a counter per
// step, as the counter spin above). Before a block arrives at a barrier it issues the next step's
// first `prefetch` bytes of its weights as one bulk copy into shared memory (sm_90
// cp.async.bulk), so that DRAM keeps streaming through the barrier and the read of x, which in
// the kernel chain it cannot: a kernel's blocks hold only one round of loads (8 KB a block) in
// registers when they wait. `prefetch` 0 measures the barrier alone.
// Prints microseconds per kernel or step (best of 5 chains after one warm-up) and the stream's
// GB/s.
// Built with the other benchmarks (-DMISTRAL_CUDA=ON -DMISTRAL_BUILD_BENCH=ON), for sm_90 only
// (griddepcontrol); stage_device.sh carries it to the GPU machine.
#include <cuda_runtime.h>

#include <cstdio>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/device_util.cuh"
#include "bulk_copy.cuh"

using mistral::cuda::DeviceBuffer;
namespace device = mistral::cuda::device;

namespace {

__device__ __forceinline__ uint4 load_stream(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// The per-step part of x's sum and of the weights' xor, stored as `step` stores them.
__device__ __forceinline__ void store_step_output(float s, uint4 acc, float* y, float* partial) {
  s = device::warp_sum(s);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x < 16) {
    float t = partial[threadIdx.x];
    for (int o = 8; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffu, t, o);
    const int out = blockIdx.x * 16 + threadIdx.x;
    const float bit = float((acc.x ^ acc.y ^ acc.z ^ acc.w) & 1u);
    if (out < 4096) y[out] = t * 1e-9f + bit * 1e-20f + 1.0f;
  }
}

// Thread 0 spins until *counter reaches `target`, then the block goes on together.
__device__ __forceinline__ void wait_for_count(const unsigned* counter, unsigned target) {
  if (threadIdx.x == 0) device::spin_until_count(counter, target);
  __syncthreads();
}

template <bool kSpin>
__global__ void __launch_bounds__(512) step(const float* x, float* y, const uint4* w, long pieces,
                                            unsigned* counters, int index, unsigned prev_blocks) {
  device::allow_next_kernel();
  const long per_block = pieces / gridDim.x;
  const uint4* mine = w + per_block * blockIdx.x;
  long i = threadIdx.x;
  uint4 acc = i < per_block ? load_stream(mine + i) : make_uint4(0, 0, 0, 0);
  if (!kSpin) {
    device::wait_for_prior_kernels();
  } else if (index > 0) {
    wait_for_count(counters + index - 1, prev_blocks);
  }
  __shared__ float partial[16];
  float s = 0.f;
  for (int j = threadIdx.x; j < 4096; j += 512) s += x[j];
  for (i += 512; i < per_block; i += 512) {
    const uint4 v = load_stream(mine + i);
    acc.x ^= v.x, acc.y ^= v.y, acc.z ^= v.z, acc.w ^= v.w;
  }
  store_step_output(s, acc, y, partial);
  if (kSpin) {
    __syncthreads();
    if (threadIdx.x == 0) device::count_in(counters + index);
    device::wait_for_prior_kernels();
  }
}

// `chain` steps of `step`'s work in one kernel (see the top of the file). Step k reads x_k (x or
// y, alternating), streams pieces of w + k * stride (mod span), and writes the other buffer; the
// block's first `prefetch` bytes of a step come through shared memory.
__global__ void __launch_bounds__(512)
    persistent(float* x, float* y, const uint4* w, long pieces, long stride, long span,
               unsigned* counters, int chain, unsigned prefetch) {
  extern __shared__ __align__(128) uint4 staged[];
  __shared__ __align__(8) uint64_t full;
  __shared__ float partial[16];
  const long per_block = pieces / gridDim.x;
  const long staged_pieces = min(long(prefetch / 16), per_block);
  const uint32_t bar = device::shared_address(&full);
  const uint64_t policy = device::l2_policy(true);
  auto mine = [&](int k) { return w + (long(k) * stride) % span + per_block * blockIdx.x; };
  auto stage = [&](int k) {  // one thread: step k's first staged_pieces into shared memory
    device::barrier_expect_bytes(bar, uint32_t(staged_pieces * 16));
    device::bulk_copy(device::shared_address(staged), mine(k), uint32_t(staged_pieces * 16), bar,
                      policy);
  };
  if (threadIdx.x == 0) {
    device::barrier_init(bar, 1);
    device::barrier_init_fence();
  }
  __syncthreads();
  if (threadIdx.x == 0 && staged_pieces > 0) stage(0);
  for (int k = 0; k < chain; ++k) {
    const float* in = k % 2 ? y : x;
    float* out = k % 2 ? x : y;
    const uint4* wk = mine(k);
    long i = staged_pieces + threadIdx.x;
    uint4 acc = i < per_block ? load_stream(wk + i) : make_uint4(0, 0, 0, 0);
    if (k > 0) wait_for_count(counters + k - 1, gridDim.x);  // all wrote step k - 1's output
    float s = 0.f;  // through L2: this block's L1 may hold x from two steps back
    for (int j = threadIdx.x; j < 4096; j += 512) s += __ldcg(in + j);
    if (staged_pieces > 0) {
      device::barrier_wait(bar, k & 1);
      for (long j = threadIdx.x; j < staged_pieces; j += 512) {
        const uint4 v = staged[j];
        acc.x ^= v.x, acc.y ^= v.y, acc.z ^= v.z, acc.w ^= v.w;
      }
    }
    for (i += 512; i < per_block; i += 512) {
      const uint4 v = load_stream(wk + i);
      acc.x ^= v.x, acc.y ^= v.y, acc.z ^= v.z, acc.w ^= v.w;
    }
    __syncthreads();  // the staged pieces are read: the next step's may land
    if (threadIdx.x == 0 && staged_pieces > 0 && k + 1 < chain) stage(k + 1);
    store_step_output(s, acc, out, partial);
    __syncthreads();
    if (threadIdx.x == 0) device::count_in(counters + k);
  }
}

DeviceBuffer allocate(size_t bytes, const std::string& what) {
  auto r = DeviceBuffer::allocate(bytes, what);
  MISTRAL_CHECK(r.ok()) << r.status().message();
  return std::move(r).value();
}

}  // namespace

int main() {
  cudaDeviceProp prop;
  MISTRAL_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const int blocks = 2 * prop.multiProcessorCount, chain = 320;
  const size_t big = size_t{2} << 30;
  const DeviceBuffer weights = allocate(big, "boundary_bench weights");
  const DeviceBuffer x_buffer = allocate(4096 * sizeof(float), "boundary_bench x");
  const DeviceBuffer y_buffer = allocate(4096 * sizeof(float), "boundary_bench y");
  const DeviceBuffer counters = allocate(chain * sizeof(unsigned), "boundary_bench counters");
  MISTRAL_CUDA_CHECK(cudaMemset(weights.data(), 1, big));
  MISTRAL_CUDA_CHECK(cudaMemset(x_buffer.data(), 0, x_buffer.bytes()));
  MISTRAL_CUDA_CHECK(cudaMemset(y_buffer.data(), 0, y_buffer.bytes()));
  const uint4* w = weights.as<const uint4>();
  float* x = x_buffer.as<float>();
  float* y = y_buffer.as<float>();
  cudaStream_t stream;
  MISTRAL_CUDA_CHECK(cudaStreamCreate(&stream));
  cudaEvent_t start, stop;
  MISTRAL_CUDA_CHECK(cudaEventCreate(&start));
  MISTRAL_CUDA_CHECK(cudaEventCreate(&stop));
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(blocks);
  config.blockDim = dim3(512);
  config.stream = stream;
  config.attrs = attr;
  config.numAttrs = 1;
  std::printf("%s, %d SMs, %d blocks x 512 threads, chain of %d kernels\n", prop.name,
              prop.multiProcessorCount, blocks, chain);
  // One chain: the counters cleared, then `chain` kernels, each reading the one before's output.
  auto enqueue_chain = [&](bool spin, long bytes) {
    auto* kernel = spin ? step<true> : step<false>;
    const size_t span = big / 16 - bytes / 16 - 1;
    MISTRAL_CUDA_CHECK(cudaMemsetAsync(counters.data(), 0, counters.bytes(), stream));
    for (int k = 0; k < chain; ++k) {
      const uint4* wk = w + (size_t(k) * (bytes / 16)) % span;
      const float* in = k % 2 ? y : x;
      float* out = k % 2 ? x : y;
      MISTRAL_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, in, out, wk, bytes / 16,
                                            counters.as<unsigned>(), k, unsigned(blocks)));
    }
  };
  // Launched from the host one by one ("stream"), or captured once and replayed as a CUDA graph
  // ("graph", as the engine's decode step runs), so the host's launch rate is out of the time.
  for (long bytes : {0L, 1L << 20, 4L << 20, 16L << 20, 64L << 20}) {
    for (bool graph : {false, true}) {
      for (int spin : {0, 1, 0, 1}) {
        cudaGraphExec_t exec = nullptr;
        if (graph) {
          cudaGraph_t captured;
          MISTRAL_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
          enqueue_chain(spin, bytes);
          MISTRAL_CUDA_CHECK(cudaStreamEndCapture(stream, &captured));
          MISTRAL_CUDA_CHECK(cudaGraphInstantiate(&exec, captured, 0));
          MISTRAL_CUDA_CHECK(cudaGraphDestroy(captured));
        }
        float best = 1e30f;
        for (int rep = 0; rep < 6; ++rep) {
          MISTRAL_CUDA_CHECK(cudaEventRecord(start, stream));
          if (graph) {
            MISTRAL_CUDA_CHECK(cudaGraphLaunch(exec, stream));
          } else {
            enqueue_chain(spin, bytes);
          }
          MISTRAL_CUDA_CHECK(cudaEventRecord(stop, stream));
          MISTRAL_CUDA_CHECK(cudaEventSynchronize(stop));
          float ms;
          MISTRAL_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
          if (rep > 0 && ms < best) best = ms;
        }
        if (exec != nullptr) MISTRAL_CUDA_CHECK(cudaGraphExecDestroy(exec));
        const double us = best * 1e3 / chain;
        std::printf("bytes/kernel %9ld  %-6s %-12s  %7.3f us per kernel  (%.0f GB/s)\n", bytes,
                    graph ? "graph" : "stream", spin ? "counter spin" : "griddep.wait", us,
                    bytes / us * 1e-3);
      }
    }
  }
  // The persistent kernel: the same steps, the same blocks, one launch.
  const unsigned max_prefetch = 96 << 10;
  MISTRAL_CUDA_CHECK(cudaFuncSetAttribute(persistent, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          int(max_prefetch)));
  int resident = 0;
  MISTRAL_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, persistent, 512, max_prefetch));
  MISTRAL_CHECK(resident * prop.multiProcessorCount >= blocks)
      << "persistent: " << resident << " blocks per SM fit, " << blocks << " needed";
  cudaLaunchAttribute cooperative[1];
  cooperative[0].id = cudaLaunchAttributeCooperative;
  cooperative[0].val.cooperative = 1;
  for (long bytes : {1L << 20, 4L << 20, 16L << 20, 64L << 20}) {
    for (unsigned prefetch : {0u, 8u << 10, 16u << 10, 32u << 10, 64u << 10, 96u << 10, 0u}) {
      if (prefetch / 4 > bytes / blocks)
        continue;  // far more than a block reads (staged: at most that)
      cudaLaunchConfig_t once = config;
      once.dynamicSmemBytes = prefetch;
      once.attrs = cooperative;
      once.numAttrs = 1;
      const long span = long(big / 16 - bytes / 16 - 1);
      float best = 1e30f;
      for (int rep = 0; rep < 6; ++rep) {
        MISTRAL_CUDA_CHECK(cudaMemsetAsync(counters.data(), 0, counters.bytes(), stream));
        MISTRAL_CUDA_CHECK(cudaEventRecord(start, stream));
        MISTRAL_CUDA_CHECK(cudaLaunchKernelEx(&once, persistent, x, y, w, bytes / 16, bytes / 16,
                                              span, counters.as<unsigned>(), chain, prefetch));
        MISTRAL_CUDA_CHECK(cudaEventRecord(stop, stream));
        MISTRAL_CUDA_CHECK(cudaEventSynchronize(stop));
        float ms;
        MISTRAL_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        if (rep > 0 && ms < best) best = ms;
      }
      const double us = best * 1e3 / chain;
      std::printf(
          "bytes/kernel %9ld  persistent, prefetch %3u KB a block  %7.3f us per step  "
          "(%.0f GB/s)\n",
          bytes, prefetch >> 10, us, bytes / us * 1e-3);
    }
  }
  MISTRAL_CUDA_CHECK(cudaEventDestroy(start));
  MISTRAL_CUDA_CHECK(cudaEventDestroy(stop));
  MISTRAL_CUDA_CHECK(cudaStreamDestroy(stream));
  return 0;
}
