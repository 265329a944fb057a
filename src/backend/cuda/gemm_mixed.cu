// Mixed-input GEMM for a few rows of x: y[m, n] = x[m, k] * W^T with int8 / int4 W and
// kMaxGemvRows < m <= kMaxMixedRows (batched decode steps, short prompts). The weights are read
// once, as stored, and expanded in registers to the values gemm's dequantize kernel writes,
// bf16(scale * q); the products run on tensor cores (mma m16n8k16, bf16 in, float32 sums). So the
// results are gemm's up to the order of the float32 sums, without gemm's round trip of a bf16
// copy of W through memory (4.6 bytes moved per int4 weight instead of 0.56).
//
// Work split. A block of 8 warps takes 256 rows of W (a warp 32: two tiles of 16) over a range of
// k (a split); splits are chosen from the shape and the GPU alone (about 2 blocks per SM), never
// from m, so a row of x gives the same bits in any batch this kernel takes. With more than one
// split, each block stores its partial sums and the last block of a row range to finish (a
// counter) adds them in split order: deterministic.
//
// Per block, x is staged in shared memory 512 k at a time (cp.async, double-buffered), rows
// past m and k past the split as zeros; W is loaded from global memory straight into registers,
// one step ahead (a step: 16 bytes of each of a lane's 4 rows).
//
// Fragments. Lane (g = lane / 4, t = lane % 4) loads 16 bytes of rows g and g + 8 of each tile:
// int4, one scale group (32 values, byte j holding element j low and j + 16 high); int8, half a
// group. The sum over k inside an mma is order-free, so each lane maps the values it holds to its
// own k-slots (2t, 2t+1, 2t+8, 2t+9), and the B fragment of lane (g, t) carries row g of x at the
// same elements: 4 consecutive bf16, one 8-byte shared-memory load. (The staging swizzles 8-byte
// units so that the 16 lanes of each load phase hit 16 different bank pairs.)
//
// Expansion, exactly bf16(s * q) with s the f16 scale:
//  - int4: q = nibble - 8 as bf16x2 by a byte permute and a subtraction; s = hi + lo with hi =
//    bf16(s) and lo = s - hi (at most 3 significant bits, so exact in bf16), then
//    fma(q, hi, q * lo): q * lo is exact, and the fused multiply-add rounds s * q once;
//  - int8: q as float (the byte placed under the exponent of 2^23), times s in float32 (exact:
//    8 + 11 bits), rounded to bf16.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/kernel_launch.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/linear_operands.h"
#include "backend/cuda/weight_expand.cuh"
#include "core/env.h"

namespace mistral::cuda {
namespace {

using namespace device;

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kWarpTiles = 2;  // tiles of 16 rows per warp
constexpr int kBlockRows = kWarps * kWarpTiles * 16;
constexpr int kSplitAlign = 128;           // a split's k: a multiple of an int4 step
constexpr int kChunkK = 512;               // k of x staged at a time
constexpr int kUnitsPerRow = kChunkK / 4;  // 8-byte units (4 bf16) of a staged row
constexpr int kBlocksPerSm = 2;
constexpr int kMaxSplits = 16;
constexpr int kMaxColBlocks = kMaxMixedRows / 8;  // columns of 8 rows of x

struct MixedArgs {
  const bf16* x;
  int m;
  int64_t n;
  int k;
  const uint8_t* w;
  int64_t row_bytes;
  const __half* scales;
  int groups;          // scale groups per row
  int split_k;         // k per split (the last may be shorter)
  float* partial;      // [row blocks][splits][values per thread / 4][kThreads] float4, splits > 1
  unsigned* counters;  // [row blocks], zero between launches
};

// Values of a lane's 16-byte piece of a row, and k per step (the quad's 4 pieces).
template <WeightFormat F>
constexpr int kPieceValues = F == WeightFormat::kInt4 ? 32 : 16;
template <WeightFormat F>
constexpr int kStepK = 4 * kPieceValues<F>;

// Where 8-byte unit u of staged row `row` goes. A load phase is 16 lanes: rows g = 0-3 (or 4-7)
// times t = 0-3, at units piece(t) + w (+ 4 for int4's high nibbles). int4 pieces are 8 units
// apart, so bit 3 tells t % 2 apart and the xor of bits 0-2 with (row % 4, t / 2) the rest; int8
// pieces are 4 units apart (bits 2-3 are t) and row % 4 goes to bits 0-1.
template <WeightFormat F>
__device__ __forceinline__ int swizzle(int row, int u) {
  if constexpr (F == WeightFormat::kInt4) {
    return u ^ (((row & 3) << 1) | ((u >> 4) & 1));
  } else {
    return u ^ (row & 3);
  }
}

// int4: bf16x2 of s * q for q (bf16x2, exact small integers), rounded once (see the top).
__device__ __forceinline__ uint32_t scale_pair(uint32_t q, uint32_t s_hi, uint32_t s_lo) {
  const __nv_bfloat162 qq = as_bf162(q);
  return as_u32(__hfma2(qq, as_bf162(s_hi), __hmul2(qq, as_bf162(s_lo))));
}
__device__ __forceinline__ void split_scale(float s, uint32_t& hi, uint32_t& lo) {
  const __nv_bfloat16 h = __float2bfloat16_rn(s);
  const __nv_bfloat16 l = __float2bfloat16_rn(s - __bfloat162float(h));
  hi = as_u32(__bfloat162bfloat162(h));
  lo = as_u32(__bfloat162bfloat162(l));
}

// int8: byte b of a word (signed q) times s, as float.
__device__ __forceinline__ float int8_scaled(uint32_t biased, int b, float s) {
  // biased = word ^ 0x80808080: byte b is q + 128; under 2^23's exponent it is 2^23 + q + 128.
  return (__uint_as_float(prmt(biased, 0x4B000000u, 0x7650u | b)) - 8388736.0f) * s;
}

template <WeightFormat F, int NB, typename OutT>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm)
    gemm_mixed_kernel(MixedArgs a, OutT* __restrict__ y) {
  extern __shared__ __align__(16) uint2 x_stage[];  // [2][NB * 8][kUnitsPerRow]
  constexpr int kStep = kStepK<F>;
  constexpr int kE = kPieceValues<F>;
  constexpr int kStepsPerChunk = kChunkK / kStep;
  constexpr int kBufferUnits = NB * 8 * kUnitsPerRow;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t row_block = blockIdx.x;
  const int split = blockIdx.y, splits = gridDim.y;
  const int k_begin = split * a.split_k;
  const int k_end = min(k_begin + a.split_k, a.k);
  const int steps = (k_end - k_begin + kStep - 1) / kStep;
  const int64_t warp_row0 = row_block * kBlockRows + warp * (kWarpTiles * 16);

  // This lane's rows: tile r, half h (row g or g + 8). Rows past n read row n - 1; their sums are
  // dropped.
  int64_t rows[kWarpTiles][2];
#pragma unroll
  for (int r = 0; r < kWarpTiles; ++r) {
#pragma unroll
    for (int h = 0; h < 2; ++h) rows[r][h] = min(warp_row0 + r * 16 + h * 8 + g, a.n - 1);
  }
  // Step s's pieces and scales; a piece past the split reads the row's first and takes scale 0.
  auto load_step = [&](int s, uint4(&wv)[kWarpTiles][2], float(&sv)[kWarpTiles][2]) {
    const int kc = k_begin + s * kStep + t * kE;
    const bool ok = kc < k_end;
    const int64_t byte = ok ? (F == WeightFormat::kInt4 ? kc / 2 : kc) : 0;
#pragma unroll
    for (int r = 0; r < kWarpTiles; ++r) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        wv[r][h] = load_stream16(a.w + rows[r][h] * a.row_bytes + byte);
        sv[r][h] =
            ok ? __half2float(load_stream_half(a.scales + rows[r][h] * a.groups + kc / 32)) : 0.0f;
      }
    }
  };
  auto stage = [&](int chunk) {
    const int k0 = k_begin + chunk * kChunkK;
    uint2* dst = x_stage + (chunk & 1) * kBufferUnits;
    for (int i = tid; i < kBufferUnits; i += kThreads) {
      const int row = i / kUnitsPerRow, u = i % kUnitsPerRow;
      const int kk = k0 + u * 4;
      const bool ok = row < a.m && kk < k_end;
      cp_async8(dst + row * kUnitsPerRow + swizzle<F>(row, u),
                a.x + (ok ? int64_t(row) * a.k + kk : 0), ok);
    }
    cp_async_commit();
  };

  float acc[kWarpTiles][NB][4];
#pragma unroll
  for (int r = 0; r < kWarpTiles; ++r) {
#pragma unroll
    for (int nb = 0; nb < NB; ++nb)
      acc[r][nb][0] = acc[r][nb][1] = acc[r][nb][2] = acc[r][nb][3] = 0;
  }

  allow_next_kernel();
  uint4 wv[kWarpTiles][2];
  float sv[kWarpTiles][2];
  load_step(0, wv, sv);  // the weights: no kernel writes them
  wait_for_prior_kernels();

  const int chunks = (k_end - k_begin + kChunkK - 1) / kChunkK;
  stage(0);
  int s = 0;
  for (int chunk = 0; chunk < chunks; ++chunk) {
    if (chunk + 1 < chunks) {
      stage(chunk + 1);  // into the buffer the block finished with at the end of chunk - 1
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const uint2* buffer = x_stage + (chunk & 1) * kBufferUnits;
    for (const int s_end = min(steps, (chunk + 1) * kStepsPerChunk); s < s_end; ++s) {
      uint4 next_w[kWarpTiles][2];
      float next_s[kWarpTiles][2];
      if (s + 1 < steps) load_step(s + 1, next_w, next_s);
      const int unit0 = ((s % kStepsPerChunk) * kStep + t * kE) / 4;  // this lane's piece
      if constexpr (F == WeightFormat::kInt4) {
        uint32_t s_hi[kWarpTiles][2], s_lo[kWarpTiles][2];
#pragma unroll
        for (int r = 0; r < kWarpTiles; ++r) {
#pragma unroll
          for (int h = 0; h < 2; ++h) split_scale(sv[r][h], s_hi[r][h], s_lo[r][h]);
        }
#pragma unroll
        for (int w = 0; w < 4; ++w) {
          // frag[r][half]: the mma A fragment of word w's low (elements 4w..4w+3) or high
          // (16 + 4w..) nibbles of tile r.
          uint32_t frag[kWarpTiles][2][4];
#pragma unroll
          for (int r = 0; r < kWarpTiles; ++r) {
            const uint32_t wa = (&wv[r][0].x)[w], wb = (&wv[r][1].x)[w];
            const uint32_t nib[2][2] = {{wa & 0x0F0F0F0Fu, wb & 0x0F0F0F0Fu},
                                        {(wa >> 4) & 0x0F0F0F0Fu, (wb >> 4) & 0x0F0F0F0Fu}};
#pragma unroll
            for (int half = 0; half < 2; ++half) {
#pragma unroll
              for (int h = 0; h < 2; ++h) {
                frag[r][half][h] = scale_pair(bf16x2_sub(magic01(nib[half][h]), kBf16x2_136),
                                              s_hi[r][h], s_lo[r][h]);
                frag[r][half][2 + h] = scale_pair(bf16x2_sub(magic23(nib[half][h]), kBf16x2_136),
                                                  s_hi[r][h], s_lo[r][h]);
              }
            }
          }
#pragma unroll
          for (int nb = 0; nb < NB; ++nb) {
            const int row = nb * 8 + g;
            const uint2* xr = buffer + row * kUnitsPerRow;
#pragma unroll
            for (int half = 0; half < 2; ++half) {
              const uint2 b = xr[swizzle<F>(row, unit0 + half * 4 + w)];
#pragma unroll
              for (int r = 0; r < kWarpTiles; ++r)
                mma_bf16_16816(acc[r][nb], frag[r][half], {b.x, b.y});
            }
          }
        }
      } else {
#pragma unroll
        for (int w = 0; w < 4; ++w) {
          uint32_t frag[kWarpTiles][4];
#pragma unroll
          for (int r = 0; r < kWarpTiles; ++r) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const uint32_t biased = (&wv[r][h].x)[w] ^ 0x80808080u;
              const float s_rh = sv[r][h];
              frag[r][h] = pack_bf16x2(int8_scaled(biased, 0, s_rh), int8_scaled(biased, 1, s_rh));
              frag[r][2 + h] =
                  pack_bf16x2(int8_scaled(biased, 2, s_rh), int8_scaled(biased, 3, s_rh));
            }
          }
#pragma unroll
          for (int nb = 0; nb < NB; ++nb) {
            const int row = nb * 8 + g;
            const uint2 b = buffer[row * kUnitsPerRow + swizzle<F>(row, unit0 + w)];
#pragma unroll
            for (int r = 0; r < kWarpTiles; ++r) mma_bf16_16816(acc[r][nb], frag[r], {b.x, b.y});
          }
        }
      }
#pragma unroll
      for (int r = 0; r < kWarpTiles; ++r) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          wv[r][h] = next_w[r][h];
          sv[r][h] = next_s[r][h];
        }
      }
    }
    __syncthreads();  // the buffer is staged again two chunks on
  }

  // acc[r][nb][i]: row warp_row0 + 16 r + g (+ 8 for i >= 2), column (row of x) 8 nb + 2t + i % 2.
  constexpr int kValues = kWarpTiles * NB * 4;
  auto store = [&](int v, float value) {
    const int r = v / (NB * 4), nb = v / 4 % NB, i = v % 4;
    const int64_t row = warp_row0 + r * 16 + g + (i >= 2 ? 8 : 0);
    const int col = nb * 8 + 2 * t + (i & 1);
    if (row < a.n && col < a.m) y[int64_t(col) * a.n + row] = from_float<OutT>(value);
  };
  const float* flat = &acc[0][0][0];
  if (splits == 1) {
#pragma unroll
    for (int v = 0; v < kValues; ++v) store(v, flat[v]);
    return;
  }
  // The last block of the row range to finish adds every split's partial, in split order. A
  // partial is kValues / 4 float4 per thread, [split][quad][thread], so the adder streams them
  // with a split's kValues / 4 loads in flight.
  static_assert(kValues % 4 == 0);
  float4* base =
      reinterpret_cast<float4*>(a.partial) + row_block * splits * (kValues / 4 * kThreads);
#pragma unroll
  for (int q = 0; q < kValues / 4; ++q) {
    base[(split * (kValues / 4) + q) * kThreads + tid] =
        make_float4(flat[4 * q], flat[4 * q + 1], flat[4 * q + 2], flat[4 * q + 3]);
  }
  __threadfence();  // publish the partial before counting it
  __syncthreads();
  __shared__ bool last;
  if (tid == 0) last = atomicAdd(&a.counters[row_block], 1u) == static_cast<unsigned>(splits - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();  // the other blocks' partials are visible from here on
  float sum[kValues];
#pragma unroll
  for (int v = 0; v < kValues; ++v) sum[v] = 0.0f;
  for (int sp = 0; sp < splits; ++sp) {
    float4 part[kValues / 4];
#pragma unroll
    for (int q = 0; q < kValues / 4; ++q)
      part[q] = __ldcg(&base[(sp * (kValues / 4) + q) * kThreads + tid]);
#pragma unroll
    for (int q = 0; q < kValues / 4; ++q) {
      sum[4 * q] += part[q].x;
      sum[4 * q + 1] += part[q].y;
      sum[4 * q + 2] += part[q].z;
      sum[4 * q + 3] += part[q].w;
    }
  }
#pragma unroll
  for (int v = 0; v < kValues; ++v) store(v, sum[v]);
  if (tid == 0) a.counters[row_block] = 0;  // ready for the next launch
}

struct Plan {
  int64_t row_blocks;
  int splits;
  int split_k;
};

// From the shape and the GPU only (not m): as many splits as keep the grid within one wave of
// kBlocksPerSm blocks per SM (a second, partial wave would take as long as the first), at most
// kMaxSplits (the adding block reads every split's partial; MISTRAL_MIXED_MAX_SPLITS, 1 to 64,
// for comparisons).
Plan make_plan(const KernelContext& ctx, const DeviceWeight& w) {
  static const int64_t max_splits =
      std::clamp<int64_t>(env_int("MISTRAL_MIXED_MAX_SPLITS", kMaxSplits), 1, 64);
  Plan p;
  p.row_blocks = (w.n + kBlockRows - 1) / kBlockRows;
  const int64_t units = (w.k + kSplitAlign - 1) / kSplitAlign;
  const int64_t want = std::clamp<int64_t>(int64_t{kBlocksPerSm} * ctx.num_sms() / p.row_blocks, 1,
                                           std::min(units, max_splits));
  p.split_k = static_cast<int>((units + want - 1) / want * kSplitAlign);
  p.splits = static_cast<int>((w.k + p.split_k - 1) / p.split_k);
  return p;
}

size_t partial_bytes(const Plan& p, int col_blocks) {
  if (p.splits == 1) return 0;
  return static_cast<size_t>(p.row_blocks) * p.splits * kWarpTiles * col_blocks * 4 * kThreads *
         sizeof(float);
}

template <WeightFormat F, int NB, typename OutT>
void launch(KernelContext& ctx, const Plan& plan, const MixedArgs& a, OutT* y) {
  auto* kernel = gemm_mixed_kernel<F, NB, OutT>;
  const int smem = 2 * NB * 8 * kUnitsPerRow * static_cast<int>(sizeof(uint2));
  MISTRAL_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid(static_cast<unsigned>(plan.row_blocks), static_cast<unsigned>(plan.splits));
  launch_kernel(ctx, kernel, grid, kThreads, smem, a, y);
}

template <WeightFormat F, typename OutT>
void launch_format(KernelContext& ctx, const Plan& plan, const MixedArgs& a, OutT* y) {
  if (a.m <= 16) return launch<F, 2>(ctx, plan, a, y);
  launch<F, kMaxColBlocks>(ctx, plan, a, y);
}

template <typename OutT>
void gemm_mixed_impl(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, OutT* y) {
  MISTRAL_CHECK(w.format != WeightFormat::kBF16)
      << "gemm_mixed takes int8 / int4 weights, not " << weight_format_name(w.format);
  MISTRAL_CHECK(m >= 1 && m <= kMaxMixedRows)
      << "gemm_mixed takes 1.." << kMaxMixedRows << " rows of x, got " << m;
  check_linear_weight(w);
  const Plan plan = make_plan(ctx, w);
  MISTRAL_CHECK(plan.row_blocks <= static_cast<int64_t>(KernelContext::kMaxCounters))
      << "gemm_mixed n = " << w.n << " has more row blocks than the context's counters";
  const size_t need = partial_bytes(plan, kMaxColBlocks);
  MISTRAL_CHECK(ctx.scratch_bytes() >= need)
      << "gemm_mixed [" << w.n << ", " << w.k << "] needs " << need
      << " bytes of scratch; call reserve_scratch first";
  MixedArgs a;
  set_linear_operands(a, x, m, w);
  a.split_k = plan.split_k;
  a.partial = static_cast<float*>(ctx.scratch());
  a.counters = ctx.counters();
  if (w.format == WeightFormat::kInt4) {
    launch_format<WeightFormat::kInt4>(ctx, plan, a, y);
  } else {
    launch_format<WeightFormat::kInt8>(ctx, plan, a, y);
  }
  MISTRAL_CUDA_CHECK_LAUNCH();
}

}  // namespace

size_t gemm_mixed_scratch_bytes(const KernelContext& ctx, const DeviceWeight& w) {
  if (w.format == WeightFormat::kBF16 || w.n <= 0 || w.k <= 0) return 0;
  return partial_bytes(make_plan(ctx, w), kMaxColBlocks);
}

int64_t gemm_mixed_max_rows() {
  static const int64_t rows = std::clamp<int64_t>(
      env_int("MISTRAL_MIXED_MAX_ROWS", static_cast<int>(kMaxMixedRows)), 0, kMaxMixedRows);
  return rows;
}

void gemm_mixed(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, float* y) {
  gemm_mixed_impl(ctx, x, m, w, y);
}
void gemm_mixed(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, bf16* y) {
  gemm_mixed_impl(ctx, x, m, w, y);
}

}  // namespace mistral::cuda
