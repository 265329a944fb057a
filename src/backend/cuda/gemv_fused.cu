// Decode GEMV of one row of x with the ops around it folded in (kernels.h, gemv_fused): the
// attention norm into the q|k|v product, the residual add into the o and down products, the MLP
// norm and silu(gate) * up into the gate|up product, and, for int8 / int4 weights, the per-group
// quantization of x that otherwise runs as a kernel of its own. At batch 1 those small kernels
// cost more than their work: each is a launch, a ramp and a drain between two GEMVs.
//
// Layout as gemv_rows.cu: a warp per row of W streaming 16-byte pieces with 4 loads in flight per
// lane, its first loads issued before the kernel waits for the one before it; 8 warps per block
// for bf16 weights, 16 for int8 / int4 (see with_block_warps).
// What each block does first (the prologue), after that wait:
//  - norm: the row's sum of squares, with the thread layout and summation order of rmsnorm's
//    kernel (256 threads, 8 values each, stride 2048, block_sum), then x_i = bf16(weight_i *
//    bf16(x_i * inv)); bf16 weights read these from shared memory. A thread's first norm weights
//    are loaded before the wait, with the first weight pieces (+2.6% bf16 decode on an H100,
//    together with embed_kernel's 16-byte loads; int8 +0.6%, int4 unchanged);
//  - int8 / int4 weights: x (normed or not) quantized per group of 32 into shared memory, four
//    threads per group (amax and the integer sum by two xor-shuffles: exact, so the same
//    xq, dx and group sums as gemv_rows.cu's quantize kernel).
// With int8 / int4 weights the grid has at most the blocks that fit the GPU at once, each looping
// over row groups, so a block pays for the prologue (x is 8-28 KB, read from L2) once, while its
// first weight loads are in flight. (A block per row group, each with its own prologue, made int4
// decode 10% slower than the separate quantize kernel on an H200: 348 vs 389 tok/s.) bf16 weights,
// whose only prologue is the norm, keep a block per row group. Dot products are those of
// gemv_rows.cu with one row of x, and the epilogues round as the ops they replace (add: bf16(y +
// bf16(sum)); SwiGLU: silu_mul's bf16(bf16(silu(g)) * u) with g, u rounded to bf16 as gemv's
// outputs are): the fused step gives the same bits as the separate ops. (A second kernel for this
// contract that streamed W through shared memory with bulk copies, sm_90, measured slower end to
// end on an H100 and was dropped: bench/RESULTS.md, 2026-12-06; `git show 761206c`.)
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/gemv_pieces.cuh"
#include "backend/cuda/kernel_launch.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/trace.cuh"
#include "core/env.h"

namespace mistral::cuda {
namespace {

using namespace device;

// Warps per block (kW below): kRowWarps for bf16 weights; 16 for int8 / int4, whose every block
// quantizes all of x (half the blocks pay that prologue, each thread does half the steps).
// MISTRAL_FUSED_WARPS=8 gives int8 / int4 the bf16 shape, for comparisons.
constexpr int kWarps = kRowWarps;
constexpr int kQuantWarps = 16;
// The norm's sum of squares keeps rmsnorm's layout (256 threads, stride 2048) at any block size:
// threads past it add nothing, so the sum has the same bits.
constexpr int kNormThreads = 256;
constexpr int kLoads = kRowLoadsInFlight;
constexpr int kChunk = 8;  // x values per thread and prologue step: 16 bytes of bf16
// Prologue steps whose loads a thread issues before it uses the first, with a norm (whose
// weights for those steps are loaded before the wait): 4 took the quantized kernels, then of 8
// warps, to 76-80 registers, 3 blocks per SM instead of 4. Without a norm (down, o) a thread
// loads 4 steps of x at once (prepare_x), within 64 registers.
constexpr int kStepsAtOnce = 2;
constexpr size_t kMaxSharedBytes = 48 << 10;

struct FusedArgs {
  const bf16* x;  // [k]
  int k;
  int64_t n;  // rows of W
  const uint8_t* w;
  const __half* scales;  // quantized formats only
  const bf16* norm;      // [k] or null
  float eps;
};

// Shared memory: the normed x for bf16 weights ([k] bf16), or, for quantized weights, xq [k]
// int8 (int4: in two planes, xq_slot), then dx [k / 32] float and the group sums [k / 32] int.
size_t shared_bytes(WeightFormat f, bool norm, int64_t k) {
  if (f == WeightFormat::kBF16) return norm ? static_cast<size_t>(k) * sizeof(bf16) : 0;
  return static_cast<size_t>(k) + static_cast<size_t>(k / kQuantGroup) * 8;
}

// The norm weights of a thread's first kStepsAtOnce chunks of x (chunks tid + u * kThreads), as
// loaded: read before the kernel waits for the one before it (no kernel writes them), so the
// prologue's value pass waits for no L2 trip of its own.
template <bool kNorm, int kThreads>
__device__ __forceinline__ void load_norm_ahead(const FusedArgs& a, uint4 (&ahead)[kStepsAtOnce]) {
#pragma unroll
  for (int u = 0; u < kStepsAtOnce; ++u) {
    const int c = threadIdx.x + u * kThreads;
    ahead[u] = kNorm && c < a.k / kChunk ? __ldg(reinterpret_cast<const uint4*>(a.norm) + c)
                                         : make_uint4(0, 0, 0, 0);
  }
}

static_assert(kChunk == 8, "a chunk of x is one unpack_bf16x8");
__device__ __forceinline__ void load_chunk(const bf16* p, float (&f)[kChunk]) {
  unpack_bf16x8(*reinterpret_cast<const uint4*>(p), f);
}

// Where chunk c of xq (8 bytes) goes, in 8-byte slots. int8: in order, so a lane's 16-byte
// piece of W meets xq 16-byte piece c. int4: a piece (one group of 32) takes the group's low 16
// bytes against its low nibbles and the high 16 against its high ones, so the two halves go to
// two planes of k / 2 bytes: lane l then reads 16-byte piece c of each, adjacent to lane l + 1's.
// (In order, each lane read 32 bytes at a 32-byte stride: two-way bank conflicts, 16 shared
// memory wavefronts per warp and piece instead of 8.)
template <WeightFormat F>
__device__ __forceinline__ int xq_slot(int c, int k) {
  if constexpr (F == WeightFormat::kInt4) {
    const int group = c / 4, part = c % 4;
    return (part / 2) * (k / 16) + group * 2 + part % 2;
  } else {
    return c;
  }
}

// The prologue (see the top of the file); ends with the block synchronized when it wrote
// shared memory. `ahead`: load_norm_ahead's.
template <WeightFormat F, bool kNorm, int kThreads>
__device__ __forceinline__ void prepare_x(const FusedArgs& a, const uint4 (&ahead)[kStepsAtOnce],
                                          uint8_t* smem) {
  static_assert(kStepsAtOnce == 2, "norm_raw picks among the chunks loaded ahead by hand");
  const int tid = threadIdx.x;
  const int chunks = a.k / kChunk;
  float inv = 0.0f;
  if constexpr (kNorm) {
    float sum_sq = 0.0f;
    for (int c0 = tid; tid < kNormThreads && c0 < chunks; c0 += kStepsAtOnce * kNormThreads) {
      float f[kStepsAtOnce][kChunk];
#pragma unroll
      for (int u = 0; u < kStepsAtOnce; ++u) {
        if (c0 + u * kNormThreads < chunks) {
          load_chunk(a.x + (c0 + u * kNormThreads) * kChunk, f[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < kStepsAtOnce; ++u) {
        if (c0 + u * kNormThreads >= chunks) break;
#pragma unroll
        for (int j = 0; j < kChunk; ++j) sum_sq = fmaf(f[u][j], f[u][j], sum_sq);
      }
    }
    inv = 1.0f / sqrtf(block_sum<kThreads>(sum_sq) / static_cast<float>(a.k) + a.eps);
  }
  // The norm weights of chunk c, this thread's step-th (taken from `ahead` for the first ones).
  auto norm_raw = [&](int c, int step) {
    if (step == 0) return ahead[0];
    if (step == 1) return ahead[1];
    return *reinterpret_cast<const uint4*>(a.norm + c * kChunk);
  };
  // x_i as the GEMV consumes it: normed and rounded to bf16 where asked. The norm works on pairs:
  // bf16(x_i * inv) two at a time (one conversion), then their product with the two norm weights
  // in one bf16x2 multiply. That multiply rounds the exact product once, as the float product
  // (exact: two 8-bit significands) rounded to bf16 does, so the values are those of
  // rmsnorm's kernel.
  auto value_chunk = [&](uint4 raw, int c, int step, float(&f)[kChunk]) {
    unpack_bf16x8(raw, f);
    if constexpr (kNorm) {
      const uint4 w = norm_raw(c, step);
      const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const __nv_bfloat162 normed = __floats2bfloat162_rn(f[2 * i] * inv, f[2 * i + 1] * inv);
        const float2 v = __bfloat1622float2(__hmul2_rn(as_bf162(words[i]), normed));
        f[2 * i] = v.x;
        f[2 * i + 1] = v.y;
      }
    }
  };
  if constexpr (F == WeightFormat::kBF16) {
    if constexpr (kNorm) {
      for (int c = tid, step = 0; c < chunks; c += kThreads, ++step) {
        float f[kChunk];
        value_chunk(*reinterpret_cast<const uint4*>(a.x + c * kChunk), c, step, f);
        reinterpret_cast<uint4*>(smem)[c] = pack_bf16x8(f);
      }
      __syncthreads();
    }
  } else {
    int8_t* xq = reinterpret_cast<int8_t*>(smem);
    float* dx = reinterpret_cast<float*>(smem + a.k);
    int* xsum = reinterpret_cast<int*>(smem + a.k + (a.k / kQuantGroup) * sizeof(float));
    // Chunk c is part (c % 4) of group c / 4; the 4 parts are adjacent lanes. Every lane takes
    // every step (the shuffles need the whole warp); chunks past the end are zeros, not stored.
    // A thread's x chunks of kAtOnce steps are loaded together (16 bytes each, unpacked one step
    // at a time), so down's x (k = 14,336: 3.5 steps of 512 threads) takes one trip to L2, not
    // two. With a norm the steps stay kStepsAtOnce, the chunks whose norm weights came ahead.
    constexpr int kAtOnce = kNorm ? kStepsAtOnce : 4;
    const int steps = (chunks + kThreads - 1) / kThreads;
    for (int s0 = 0; s0 < steps; s0 += kAtOnce) {
      uint4 raw[kAtOnce];
#pragma unroll
      for (int u = 0; u < kAtOnce; ++u) {
        const int c = tid + (s0 + u) * kThreads;
        raw[u] = s0 + u < steps && c < chunks ? *reinterpret_cast<const uint4*>(a.x + c * kChunk)
                                              : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kAtOnce; ++u) {
        if (s0 + u >= steps) break;  // the same in every thread
        const int c = tid + (s0 + u) * kThreads;
        const bool live = c < chunks;
        float f[kChunk] = {};
        if (live) value_chunk(raw[u], c, s0 + u, f);
        float amax = 0.0f;
#pragma unroll
        for (int j = 0; j < kChunk; ++j) amax = fmaxf(amax, fabsf(f[j]));
        amax = fmaxf(amax, __shfl_xor_sync(kFullMask, amax, 1));
        amax = fmaxf(amax, __shfl_xor_sync(kFullMask, amax, 2));
        int sum = 0;
        uint32_t word[kChunk / 4];
        quantize_x_values(f, amax, word, sum);
        sum += __shfl_xor_sync(kFullMask, sum, 1);
        sum += __shfl_xor_sync(kFullMask, sum, 2);
        if (live) {
          reinterpret_cast<uint2*>(xq)[xq_slot<F>(c, a.k)] = make_uint2(word[0], word[1]);
          if (c % 4 == 0) {
            dx[c / 4] = x_group_scale(amax);
            xsum[c / 4] = sum;
          }
        }
      }
    }
    __syncthreads();
  }
}

// Outputs of one row group of a block of kW warps (SwiGLU: half the warps take gate rows, half
// the matching up rows), and outputs of W in all (SwiGLU: half its n rows).
template <GemvOutput kOut, int kW>
constexpr int kOutputsPerGroup = kOut == GemvOutput::kSwiGLU ? kW / 2 : kW;
template <GemvOutput kOut>
__host__ __device__ constexpr int64_t output_count(int64_t n) {
  return kOut == GemvOutput::kSwiGLU ? n / 2 : n;
}

// Where a warp's row of W is, for one row group (8 rows, or 4 gate rows and their 4 up rows).
struct WarpRow {
  int64_t out;  // output index
  bool valid;   // out < the number of outputs
  int pieces;   // 16-byte pieces to read (0 past the last row)
  const uint4* w;
  const __half* scales;
};

template <WeightFormat F, GemvOutput kOut, int kW>
__device__ __forceinline__ WarpRow warp_row(const FusedArgs& a, int64_t group, int warp) {
  constexpr int kPerGroup = kOutputsPerGroup<kOut, kW>;
  const int64_t outputs = output_count<kOut>(a.n);
  const int row_bytes = F == WeightFormat::kInt8   ? a.k
                        : F == WeightFormat::kInt4 ? a.k / 2
                                                   : a.k * 2;
  WarpRow r;
  r.out = group * kPerGroup + warp % kPerGroup;
  r.valid = r.out < outputs;
  // SwiGLU: warps 0-3 take rows of the gate half, warps 4-7 the same rows of the up half.
  const int64_t row = !r.valid ? 0 : warp < kPerGroup ? r.out : outputs + r.out;
  r.pieces = r.valid ? row_bytes / 16 : 0;
  r.w = reinterpret_cast<const uint4*>(a.w + row * int64_t(row_bytes));
  r.scales = F == WeightFormat::kBF16 ? nullptr : a.scales + row * int64_t(a.k / kQuantGroup);
  return r;
}

// A grid of at most as many blocks as fit the GPU at once, each taking row groups blockIdx.x,
// + gridDim.x, ...: the prologue is paid once per block, and a warp issues the first loads of its
// next row before it reduces and stores the current one.
template <WeightFormat F, typename OutT, bool kNorm, GemvOutput kOut, int kW>
__global__ void __launch_bounds__(kW * 32)
    gemv_fused_kernel(FusedArgs a, int64_t groups, OutT* __restrict__ y) {
  extern __shared__ __align__(16) uint8_t smem[];
  constexpr int kPerGroup = kOutputsPerGroup<kOut, kW>;
  constexpr bool kQuant = F != WeightFormat::kBF16;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  auto group_of = [](int c) { return F == WeightFormat::kInt8 ? c / 2 : c; };
  // The timeline's points (trace.cuh; nothing in a default build). The records are reserved
  // here, not just before the wait: there, with the first loads held, the int4 kernels with a
  // norm took 75-77 registers.
  trace_enter();
  trace_reserve(4);
  allow_next_kernel();
  int64_t group = blockIdx.x;
  WarpRow r = warp_row<F, kOut, kW>(a, group, warp);
  uint4 wv[kLoads];
  __half sv[kLoads];
  load_pieces(r.w, r.pieces, 0, lane, wv);  // the weights: no kernel writes them
  if constexpr (kQuant) load_scales(r.scales, r.pieces, 0, lane, group_of, sv);
  uint4 norm_ahead[kStepsAtOnce];
  load_norm_ahead<kNorm, kW * 32>(a, norm_ahead);
  wait_for_prior_kernels();
  trace_mark(1);
  prepare_x<F, kNorm, kW * 32>(a, norm_ahead, smem);
  trace_mark(2);

  const int k_groups = a.k / kQuantGroup;
  const uint4* xs = reinterpret_cast<const uint4*>(smem);
  const float* dx = reinterpret_cast<const float*>(smem + a.k);
  const int* xsum = reinterpret_cast<const int*>(smem + a.k + k_groups * sizeof(float));
  for (;;) {
    float acc = 0.0f;
    for (int base = 0; base < r.pieces; base += 32 * kLoads) {
      if (base > 0) {
        load_pieces(r.w, r.pieces, base, lane, wv);
        if constexpr (kQuant) load_scales(r.scales, r.pieces, base, lane, group_of, sv);
      }
#pragma unroll
      for (int i = 0; i < kLoads; ++i) {
        const int c = base + i * 32 + lane;
        if (c >= r.pieces) continue;
        if constexpr (F == WeightFormat::kBF16) {
          const uint4 xv = kNorm ? xs[c] : __ldg(reinterpret_cast<const uint4*>(a.x) + c);
          acc = dot_bf16_piece(wv[i], xv, acc);
        } else {
          const int g = group_of(c);
          int isum;
          if constexpr (F == WeightFormat::kInt8) {
            isum = dot16(wv[i], xs[c], 0);
          } else {
            uint4 lo, hi;
            split_nibbles(wv[i], lo, hi);
            isum = dot16(hi, xs[k_groups + c], dot16(lo, xs[c], 0)) - 8 * xsum[g];
          }
          acc = fmaf(float(isum), __half2float(sv[i]) * dx[g], acc);
        }
      }
    }
    // The next row group's first loads go out before this one's reduction and store.
    const int64_t next = group + gridDim.x;
    const WarpRow current = r;
    if (next < groups) {
      r = warp_row<F, kOut, kW>(a, next, warp);
      load_pieces(r.w, r.pieces, 0, lane, wv);
      if constexpr (kQuant) load_scales(r.scales, r.pieces, 0, lane, group_of, sv);
    }
    const float sum = warp_sum(acc);
    if constexpr (kOut == GemvOutput::kSwiGLU) {
      __shared__ float up[kPerGroup];
      if (warp >= kPerGroup && lane == 0) up[warp - kPerGroup] = round_to<bf16>(sum);
      __syncthreads();
      if (warp < kPerGroup && current.valid && lane == 0) {
        const float g = round_to<bf16>(sum);
        y[current.out] =
            from_float<OutT>(__fmul_rn(round_to<bf16>(g / (1.0f + expf(-g))), up[warp]));
      }
      __syncthreads();  // up[] is written again for the next group
    } else if (current.valid && lane == 0) {
      if constexpr (kOut == GemvOutput::kAddTo) {
        y[current.out] = from_float<OutT>(__fadd_rn(to_float(y[current.out]), round_to<OutT>(sum)));
      } else {
        y[current.out] = from_float<OutT>(sum);
      }
    }
    if (next >= groups) break;
    group = next;
  }
  trace_finish(trace_gemv_code(int(F), kNorm, int(kOut), a.k), 4);
}

// Blocks of the kernel that fit one SM at once with `threads` threads and `shared` bytes of
// dynamic shared memory (asked of the runtime once per kernel and size).
int resident_blocks(const void* kernel, int threads, size_t shared) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, size_t>, int> known;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = known.find({kernel, shared});
  if (it == known.end()) {
    int blocks = 0;
    MISTRAL_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, shared));
    it = known.emplace(std::make_pair(kernel, shared), std::max(1, blocks)).first;
  }
  return it->second;
}

// f(warps per block as an integral constant): kWarps for bf16 weights, kQuantWarps for int8 /
// int4 unless MISTRAL_FUSED_WARPS=8. On an H100 (random 7B, 512-token prompt) 16 warps took int4
// decode from 386-387 to 395-397 tok/s and int8 from 273 to 278; 32 warps (one block per SM) gave
// int4 378, and bf16 measured no better with 16 (171.7 against 172.3): bench/RESULTS.md.
template <WeightFormat F, typename Fn>
void with_block_warps(Fn&& f) {
  if constexpr (F == WeightFormat::kBF16) {
    f(std::integral_constant<int, kWarps>());
  } else {
    static const int warps = env_int("MISTRAL_FUSED_WARPS", kQuantWarps);
    if (warps == kWarps) return f(std::integral_constant<int, kWarps>());
    f(std::integral_constant<int, kQuantWarps>());
  }
}

template <WeightFormat F, typename OutT, bool kNorm, GemvOutput kOut>
void launch_fused(KernelContext& ctx, const FusedArgs& a, OutT* y) {
  with_block_warps<F>([&](auto warps) {
    constexpr int kW = decltype(warps)::value;
    constexpr int64_t kPerGroup = kOutputsPerGroup<kOut, kW>;
    const int64_t groups = (output_count<kOut>(a.n) + kPerGroup - 1) / kPerGroup;
    auto* kernel = gemv_fused_kernel<F, OutT, kNorm, kOut, kW>;
    const size_t shared = shared_bytes(F, kNorm, a.k);
    // bf16 weights: a block per row group; their prologue (the norm, if any) is short next to
    // rows of 8 KB, and the looping grid measured 3% slower end to end there.
    int64_t blocks = groups;
    if constexpr (F != WeightFormat::kBF16) {
      static const int per_sm_cap = env_int("MISTRAL_FUSED_GEMV_BLOCKS_PER_SM", 0);  // 0: all fit
      int per_sm = resident_blocks(reinterpret_cast<const void*>(kernel), kW * 32, shared);
      if (per_sm_cap > 0) per_sm = std::min(per_sm, per_sm_cap);
      blocks = std::min<int64_t>(groups, int64_t(per_sm) * ctx.num_sms());
    }
    launch_kernel(ctx, kernel, static_cast<unsigned>(blocks), kW * 32, shared, a, groups, y);
  });
  MISTRAL_CUDA_CHECK_LAUNCH();
}

template <WeightFormat F, typename OutT, bool kNorm>
void with_output(KernelContext& ctx, const FusedArgs& a, GemvOutput output, OutT* y) {
  if constexpr (std::is_same_v<OutT, float>) {
    MISTRAL_CHECK(output == GemvOutput::kStore) << "gemv_fused: float output only stores";
    return launch_fused<F, OutT, kNorm, GemvOutput::kStore>(ctx, a, y);
  } else {
    switch (output) {
      case GemvOutput::kStore:
        return launch_fused<F, OutT, kNorm, GemvOutput::kStore>(ctx, a, y);
      case GemvOutput::kAddTo:
        return launch_fused<F, OutT, kNorm, GemvOutput::kAddTo>(ctx, a, y);
      case GemvOutput::kSwiGLU:
        return launch_fused<F, OutT, kNorm, GemvOutput::kSwiGLU>(ctx, a, y);
    }
  }
}

template <WeightFormat F, typename OutT>
void with_norm(KernelContext& ctx, const FusedArgs& a, GemvOutput output, OutT* y) {
  if (a.norm != nullptr) return with_output<F, OutT, true>(ctx, a, output, y);
  with_output<F, OutT, false>(ctx, a, output, y);
}

template <typename OutT>
void gemv_fused_impl(KernelContext& ctx, const bf16* x, const DeviceWeight& w, const GemvFusion& f,
                     OutT* y) {
  MISTRAL_CHECK(gemv_fused_supported(w, f))
      << "gemv_fused: " << weight_format_name(w.format) << " weight [" << w.n << ", " << w.k
      << "] with this fusion is not supported (see gemv_fused_supported)";
  MISTRAL_CHECK((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(w.data) |
                 reinterpret_cast<uintptr_t>(f.norm)) %
                    16 ==
                0)
      << "gemv_fused: x, W and the norm weight must be 16-byte aligned";
  FusedArgs a;
  a.x = x;
  a.k = static_cast<int>(w.k);
  a.n = w.n;
  a.w = static_cast<const uint8_t*>(w.data);
  a.scales = w.scales;
  a.norm = f.norm;
  a.eps = f.eps;
  switch (w.format) {
    case WeightFormat::kBF16:
      return with_norm<WeightFormat::kBF16>(ctx, a, f.output, y);
    case WeightFormat::kInt8:
      return with_norm<WeightFormat::kInt8>(ctx, a, f.output, y);
    case WeightFormat::kInt4:
      return with_norm<WeightFormat::kInt4>(ctx, a, f.output, y);
  }
}

}  // namespace

MISTRAL_CUDA_TRACE_ATTACH(trace_attach_gemv_fused)

bool gemv_fused_supported(const DeviceWeight& w, const GemvFusion& f) {
  const bool quantized = w.format != WeightFormat::kBF16;
  if (w.n <= 0 || w.k <= 0 || w.k >= (int64_t{1} << 30)) return false;
  if (w.k % (quantized ? kQuantGroup : 8) != 0) return false;
  if (quantized && w.scales == nullptr) return false;
  if (f.output == GemvOutput::kSwiGLU && w.n % 2 != 0) return false;
  return shared_bytes(w.format, f.norm != nullptr, w.k) <= kMaxSharedBytes;
}

void gemv_fused(KernelContext& ctx, const bf16* x, const DeviceWeight& w, const GemvFusion& f,
                bf16* y) {
  gemv_fused_impl(ctx, x, w, f, y);
}
void gemv_fused(KernelContext& ctx, const bf16* x, const DeviceWeight& w, const GemvFusion& f,
                float* y) {
  gemv_fused_impl(ctx, x, w, f, y);
}

}  // namespace mistral::cuda
