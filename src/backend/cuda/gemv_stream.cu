// Decode GEMV of one row of x with fused ops (kernels.h, gemv_fused) that streams W through
// shared memory with the Hopper bulk-copy engine instead of through registers.
//
// Why: the register kernel (gemv_fused.cu) keeps at most 4 loads of 16 bytes in flight per lane,
// and a warp waits for its whole row before it issues the next one, so an SM has ~64 KB on its
// way at best and the small matrices (q|k|v, o) end before they reach the bandwidth of the large
// ones. Here one producer warp per block keeps a ring of `stages` slots of 16 KB (18 KB with
// scales) filled with cp.async.bulk copies that hold no registers, and it fills the whole ring
// before the kernel waits for the one before it (weights are never written by a kernel): with
// programmatic dependent launch the next matrix's first bytes arrive while the previous kernel
// (attention, rope, the GEMV before) still runs.
//
// Layout: blocks of 8 consumer warps and 1 producer warp, at most one block per SM by default
// (MISTRAL_STREAM_BLOCKS_PER_SM), each taking a contiguous range of outputs (an even share of the
// rows, so no block has a whole row group more than another). A ring slot holds one 2 KB chunk
// of each of the 8 rows of a row group (SwiGLU: 4 gate rows and their 4 up rows), and their
// scales; consumer warp w takes row w of every slot, lane taking pieces lane, lane + 32, lane +
// 64 and lane + 96 of the chunk: over the chunks of a row, the same pieces in the same order as
// the register kernel, so the same sums. Slot s has two mbarriers: full[s] (the producer's
// expect_tx, completed by the copies' bytes) and empty[s] (one arrival per consumer warp).
// The prologue (prepare_x) and epilogue (store_output) are the register kernel's.
//
// Status: opt-in (MISTRAL_GEMV_STREAM=1). Written on 2026-12-06 in a session that got no GPU
// time; its bit-exact tests (tests/cuda/fused_gemv_test.cc) and the A/B against the register
// kernel (bench/cuda/gemv_stream_ab.sh) have not run yet. Make it the default only on numbers.
#include <algorithm>
#include <mutex>
#include <set>

#include "backend/cuda/bulk_copy.cuh"
#include "backend/cuda/gemv_stream.h"
#include "backend/cuda/kernel_launch.h"
#include "core/env.h"

namespace mistral::cuda::fused_gemv {
namespace {

constexpr int kConsumerWarps = kRowWarps;
constexpr int kThreads = (kConsumerWarps + 1) * 32;
constexpr int kChunkBytes = 2048;                   // of one row, per ring slot
constexpr int kChunkPieces = kChunkBytes / 16;      // 128: 4 per lane
constexpr int kChunkScaleBytes = kChunkPieces * 2;  // room for int4's scale per piece
constexpr int kDefaultStages = 4;
constexpr int kMaxStages = 16;

struct Ring {
  uint32_t x_bytes;      // shared memory before the ring: x as prepare_x leaves it, 128-aligned
  uint32_t stage_bytes;  // a slot: 8 row chunks, then (int8 / int4) their scales
  int stages;
  bool evict_first;  // weights marked first to leave L2 (they are read once per step)
};

// Bytes of f16 scales that go with `w_bytes` of a quantized row (a scale per 32 values).
template <WeightFormat F>
__host__ __device__ constexpr int scale_bytes_of(int w_bytes) {
  return F == WeightFormat::kInt4 ? w_bytes / 8 : F == WeightFormat::kInt8 ? w_bytes / 16 : 0;
}

// The 8 consumer warps (named barrier 1; the producer warp may have left).
__device__ __forceinline__ void sync_consumers() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(kConsumerWarps * 32) : "memory");
}

// Where a block is in its sequence of ring steps: row group after row group of its range of
// outputs, chunk after chunk of each row, slot after slot of the ring (no divisions per step).
struct Cursor {
  int slot = 0;
  uint32_t parity = 0;  // of this use of the slot: (step / stages) % 2
  int chunk = 0;
  int64_t first;  // the row group's first output

  __device__ __forceinline__ void next(int stages, int chunks, int per_group) {
    if (++slot == stages) slot = 0, parity ^= 1;
    if (++chunk == chunks) chunk = 0, first += per_group;
  }
};

template <WeightFormat F, typename OutT, bool kNorm, GemvOutput kOut>
__global__ void __launch_bounds__(kThreads)
    gemv_stream_kernel(FusedArgs a, Ring ring, OutT* __restrict__ y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  __trap();  // launched only on sm_90 and later (gemv_stream_fits); the copies compile to nothing
#endif
  extern __shared__ __align__(128) uint8_t smem[];
  constexpr int kPer = kOutputsPerGroup<kOut, kConsumerWarps>;
  constexpr bool kQuant = F != WeightFormat::kBF16;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  allow_next_kernel();
  uint8_t* slots = smem + ring.x_bytes;
  uint64_t* bars = reinterpret_cast<uint64_t*>(slots + size_t(ring.stages) * ring.stage_bytes);
  auto full = [&](int slot) { return shared_address(bars + slot); };
  auto empty = [&](int slot) { return shared_address(bars + ring.stages + slot); };
  const int64_t outputs = output_count<kOut>(a.n);
  const int64_t begin = outputs * blockIdx.x / gridDim.x;
  const int64_t end = outputs * (blockIdx.x + 1) / gridDim.x;
  const int row_bytes = row_bytes_of<F>(a.k);
  const int chunks = (row_bytes + kChunkBytes - 1) / kChunkBytes;
  const int total = static_cast<int>((end - begin + kPer - 1) / kPer) * chunks;
  if (threadIdx.x == 0) {
    for (int s = 0; s < ring.stages; ++s) {
      barrier_init(full(s), 1);
      barrier_init(empty(s), kConsumerWarps);
    }
    barrier_init_fence();
  }
  __syncthreads();

  const bool producer = warp == kConsumerWarps;
  // Producer: lane r < 8 copies row r's chunk, lane 8 + r its scales.
  uint64_t policy = 0;
  // The outputs of the cursor's row group inside the block's range, and the bytes of each row's
  // chunk.
  auto valid_outputs = [&](const Cursor& c) { return int(min(int64_t{kPer}, end - c.first)); };
  auto chunk_bytes = [&](const Cursor& c) {
    return min(kChunkBytes, row_bytes - c.chunk * kChunkBytes);
  };
  auto issue = [&](const Cursor& s) {
    const int valid = valid_outputs(s), bytes = chunk_bytes(s);
    const int scale_bytes = scale_bytes_of<F>(bytes);
    const int rows = (kOut == GemvOutput::kSwiGLU ? 2 : 1) * valid;
    if (lane == 0) barrier_expect_bytes(full(s.slot), rows * (bytes + scale_bytes));
    __syncwarp();
    const int r = lane % kConsumerWarps;
    const bool scale_lane = lane >= kConsumerWarps;
    if (lane >= 2 * kConsumerWarps || r % kPer >= valid || (scale_lane && !kQuant)) return;
    const int64_t out = s.first + r % kPer;
    const int64_t row = kOut == GemvOutput::kSwiGLU && r >= kPer ? outputs + out : out;
    uint8_t* slot = slots + size_t(s.slot) * ring.stage_bytes;
    if (!scale_lane) {
      bulk_copy(shared_address(slot + r * kChunkBytes),
                a.w + row * row_bytes + int64_t(s.chunk) * kChunkBytes, bytes, full(s.slot),
                policy);
    } else {
      const auto* scales = reinterpret_cast<const uint8_t*>(a.scales) +
                           row * scale_bytes_of<F>(row_bytes) +
                           int64_t(s.chunk) * scale_bytes_of<F>(kChunkBytes);
      bulk_copy(shared_address(slot + kConsumerWarps * kChunkBytes + r * kChunkScaleBytes), scales,
                scale_bytes, full(s.slot), policy);
    }
  };
  Cursor at;
  at.first = begin;
  int step = 0;
  if (producer) {  // the first slots before the wait: weights only
    policy = l2_policy(ring.evict_first);
    for (; step < total && step < ring.stages; ++step, at.next(ring.stages, chunks, kPer)) {
      issue(at);
    }
  }
  wait_for_prior_kernels();
  prepare_x<F, kNorm, kThreads>(a, smem);
  if (producer) {
    for (; step < total; ++step, at.next(ring.stages, chunks, kPer)) {
      barrier_wait(empty(at.slot), at.parity ^ 1);  // the slot's previous use was consumed
      issue(at);
    }
    return;
  }

  __shared__ float up[kPer];
  float acc = 0.0f;
  for (; step < total; ++step, at.next(ring.stages, chunks, kPer)) {
    const Cursor& s = at;
    const bool mine = warp % kPer < valid_outputs(s);
    barrier_wait(full(s.slot), s.parity);
    if (mine) {
      const uint8_t* slot = slots + size_t(s.slot) * ring.stage_bytes;
      const uint4* w = reinterpret_cast<const uint4*>(slot + warp * kChunkBytes);
      const __half* sc = reinterpret_cast<const __half*>(slot + kConsumerWarps * kChunkBytes +
                                                         warp * kChunkScaleBytes);
      const int pieces = chunk_bytes(s) / 16;
#pragma unroll
      for (int i = 0; i < kChunkPieces / 32; ++i) {
        const int p = i * 32 + lane;
        if (p >= pieces) continue;
        __half scale = __half();
        if constexpr (kQuant) scale = sc[piece_group<F>(p)];
        acc = add_piece<F, kNorm>(a, smem, s.chunk * kChunkPieces + p, w[p], scale, acc);
      }
    }
    __syncwarp();
    if (lane == 0) barrier_arrive(empty(s.slot));
    if (s.chunk == chunks - 1) {
      store_output<OutT, kOut, kPer>(warp_sum(acc), warp, lane, mine, s.first + warp % kPer, y, up,
                                     [] { sync_consumers(); });
      acc = 0.0f;
    }
  }
}

Ring ring_for(WeightFormat f, bool norm, int64_t k) {
  static const int stages =
      std::clamp(env_int("MISTRAL_STREAM_STAGES", kDefaultStages), 1, kMaxStages);
  static const bool evict_first = env_int("MISTRAL_STREAM_EVICT_FIRST", 1) != 0;
  Ring r;
  r.x_bytes = static_cast<uint32_t>((shared_bytes(f, norm, k) + 127) / 128 * 128);
  r.stage_bytes =
      kConsumerWarps * (kChunkBytes + (f == WeightFormat::kBF16 ? 0 : kChunkScaleBytes));
  r.stages = stages;
  r.evict_first = evict_first;
  return r;
}

size_t ring_shared_bytes(const Ring& r) {
  return r.x_bytes + size_t(r.stages) * r.stage_bytes + size_t(2 * r.stages) * sizeof(uint64_t);
}

// Lets a kernel take more than 48 KB of dynamic shared memory (once per kernel).
void allow_large_shared(const void* kernel, size_t bytes) {
  static std::mutex mutex;
  static std::set<std::pair<const void*, size_t>> done;
  std::lock_guard<std::mutex> lock(mutex);
  if (!done.insert({kernel, bytes}).second) return;
  MISTRAL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(bytes)));
}

template <typename OutT>
void gemv_stream_impl(KernelContext& ctx, const FusedArgs& a, WeightFormat format,
                      GemvOutput output, OutT* y) {
  dispatch<OutT>(format, a.norm != nullptr, output, [&](auto fc, auto norm, auto out) {
    constexpr WeightFormat F = decltype(fc)::value;
    constexpr GemvOutput kOut = decltype(out)::value;
    auto* kernel = gemv_stream_kernel<F, OutT, decltype(norm)::value, kOut>;
    const Ring ring = ring_for(F, a.norm != nullptr, a.k);
    const size_t shared = ring_shared_bytes(ring);
    allow_large_shared(reinterpret_cast<const void*>(kernel), shared);
    static const int per_sm = std::max(1, env_int("MISTRAL_STREAM_BLOCKS_PER_SM", 1));
    const int64_t blocks =
        std::min<int64_t>(output_count<kOut>(a.n), int64_t(per_sm) * ctx.num_sms());
    launch_kernel(ctx, kernel, static_cast<unsigned>(blocks), kThreads, shared, a, ring, y);
  });
  MISTRAL_CUDA_CHECK_LAUNCH();
}

}  // namespace

bool gemv_stream_fits(const KernelContext& ctx, const DeviceWeight& w, const GemvFusion& f) {
  if (ctx.props().major < 9) return false;
  if (w.format != WeightFormat::kBF16) {
    if (w.k % 256 != 0 || reinterpret_cast<uintptr_t>(w.scales) % 16 != 0) return false;
  }
  const Ring ring = ring_for(w.format, f.norm != nullptr, w.k);
  return ring_shared_bytes(ring) <= ctx.props().sharedMemPerBlockOptin;
}

void gemv_stream(KernelContext& ctx, const FusedArgs& a, WeightFormat format, GemvOutput output,
                 bf16* y) {
  gemv_stream_impl(ctx, a, format, output, y);
}
void gemv_stream(KernelContext& ctx, const FusedArgs& a, WeightFormat format, GemvOutput output,
                 float* y) {
  gemv_stream_impl(ctx, a, format, output, y);
}

}  // namespace mistral::cuda::fused_gemv
