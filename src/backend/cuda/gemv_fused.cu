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
//    bf16(x_i * inv)); bf16 weights read these from shared memory;
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
// end on an H100 and was dropped: bench/RESULTS.md, 2026-12-06.)
#include <algorithm>

#include "backend/cuda/gemv_fused_parts.cuh"
#include "backend/cuda/kernel_launch.h"
#include "core/env.h"

namespace mistral::cuda {
namespace {

using namespace device;
using namespace fused_gemv;

// Warps per block (kW below): kRowWarps for bf16 weights; 16 for int8 / int4, whose every block
// quantizes all of x (half the blocks pay that prologue, each thread does half the steps).
// MISTRAL_FUSED_WARPS=8 gives int8 / int4 the bf16 shape, for comparisons.
constexpr int kWarps = kRowWarps;
constexpr int kQuantWarps = 16;
constexpr int kLoads = kRowLoadsInFlight;

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
  const int row_bytes = row_bytes_of<F>(a.k);
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
  auto group_of = [](int c) { return piece_group<F>(c); };
  allow_next_kernel();
  int64_t group = blockIdx.x;
  WarpRow r = warp_row<F, kOut, kW>(a, group, warp);
  uint4 wv[kLoads];
  __half sv[kLoads];
  load_pieces(r.w, r.pieces, 0, lane, wv);  // the weights: no kernel writes them
  if constexpr (kQuant) load_scales(r.scales, r.pieces, 0, lane, group_of, sv);
  wait_for_prior_kernels();
  prepare_x<F, kNorm, kW * 32>(a, smem);

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
        if (c < r.pieces) acc = add_piece<F, kNorm>(a, smem, c, wv[i], sv[i], acc);
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
    __shared__ float up[kPerGroup];
    store_output<OutT, kOut, kPerGroup>(warp_sum(acc), warp, lane, current.valid, current.out, y,
                                        up, [] { __syncthreads(); });
    if (next >= groups) break;
    group = next;
  }
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
  dispatch<OutT>(w.format, f.norm != nullptr, f.output, [&](auto format, auto norm, auto output) {
    constexpr WeightFormat F = decltype(format)::value;
    constexpr bool kNorm = decltype(norm)::value;
    constexpr GemvOutput kOut = decltype(output)::value;
    launch_fused<F, OutT, kNorm, kOut>(ctx, a, y);
  });
}

}  // namespace

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
