// Decode GEMV y[m, n] = x[m, k] * W^T (m <= 8) for bf16, int8 and int4 weights.
//
// Work split. A block of 4 warps owns a tile of 16 rows of W and a range of K; each warp takes
// runs of 4 consecutive 64-byte "iterations" of those rows. In an iteration the 4 lanes of a quad
// (same g = lane / 4) each load 16 bytes of row g and of row g + 8, so a warp instruction reads
// 64 contiguous bytes of 8 rows and a warp run reads 256 contiguous bytes per row. Small N splits
// K across blocks too (split-K); the last block of a tile adds the partial sums in split order.
//
// Arithmetic. One mma.m16n8k16 takes A = 16 rows of W by 16 k and B = 16 k by 8 columns of x^T
// (columns >= m are zero), so every m <= 8 costs the same and a row's result does not depend on
// m. The sum over k is order-free inside an mma, so each thread maps the elements it loaded to
// its own k-slots (2t, 2t+1, 2t+8, 2t+9) and loads x for the same elements. Quantized groups need
// one scale per mma, but a quad's four 16-byte loads are four different groups (int4) or two
// (int8); a 4x4 word transpose inside the quad gives each lane word t of every chunk instead, so
// that all lanes of an mma work on one group. q (int8) and nibble - 8 (int4) are small integers,
// exact in bf16, so the mma sums exact products in float32 and the group's f16 scale multiplies
// that partial sum in float32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/kernels.h"

namespace mistral::cuda {

namespace {

using namespace device;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTileRows = 16;
constexpr int kIterBytes = 64;          // of one row, per quad and iteration
constexpr int kUnroll = 4;              // iterations a warp loads before it computes
constexpr int kPartialFloats = 32 * 4;  // one warp's accumulator fragments

struct GemvArgs {
  const bf16* x;
  int m;
  int64_t n;
  int64_t k;
  const uint8_t* w;
  int64_t row_bytes;
  const __half* scales;
  int64_t groups;  // scale groups per row
  int iters;       // ceil(row_bytes / kIterBytes)
  int splits;
  float* partial;      // [tiles][splits][kPartialFloats] when splits > 1
  unsigned* counters;  // [tiles], zero between launches
};

// bf16 constants as bf16x2 bit patterns (the upper 16 bits of the float32 pattern).
constexpr uint32_t kBf16x2_128 = 0x43004300u;  // 128.0: 128 + v is exact for 0 <= v < 128
constexpr uint32_t kBf16x2_136 = 0x43084308u;  // 136.0 = 128 + 8
constexpr uint32_t kBf16x2_16 = 0x41804180u;   // 16.0

// Lanes t of a quad hold words v[0..3] of chunk t; afterwards lane t holds word t of chunks 0..3
// (v[j] = old v[t] of lane j). Two butterfly stages, each swapping one index bit between the
// lane and the word.
__device__ __forceinline__ void quad_transpose(uint32_t (&v)[4], int t) {
  {
    const bool odd = t & 1;
    const uint32_t r0 = __shfl_xor_sync(kFullMask, odd ? v[0] : v[1], 1);
    const uint32_t r1 = __shfl_xor_sync(kFullMask, odd ? v[2] : v[3], 1);
    if (odd) {
      v[0] = r0;
      v[2] = r1;
    } else {
      v[1] = r0;
      v[3] = r1;
    }
  }
  {
    const bool high = t & 2;
    const uint32_t r0 = __shfl_xor_sync(kFullMask, high ? v[0] : v[2], 2);
    const uint32_t r1 = __shfl_xor_sync(kFullMask, high ? v[1] : v[3], 2);
    if (high) {
      v[0] = r0;
      v[1] = r1;
    } else {
      v[2] = r0;
      v[3] = r1;
    }
  }
}

// p holds two bytes in the low bytes of its 16-bit halves; returns bf16x2 of their low nibbles
// and high nibbles, each as 128 + nibble (exact).
__device__ __forceinline__ uint32_t low_nibbles(uint32_t p) {
  return (p & 0x000F000Fu) | kBf16x2_128;
}
__device__ __forceinline__ uint32_t high_nibbles(uint32_t p) {
  return ((p >> 4) & 0x000F000Fu) | kBf16x2_128;
}
__device__ __forceinline__ uint32_t bf16x2_sub(uint32_t a, uint32_t b) {
  return as_u32(__hsub2(as_bf162(a), as_bf162(b)));
}

// Bytes 0,1 and 2,3 of w spread to the low bytes of 16-bit halves.
__device__ __forceinline__ uint32_t bytes01(uint32_t w) { return prmt(w, 0, 0x4140); }
__device__ __forceinline__ uint32_t bytes23(uint32_t w) { return prmt(w, 0, 0x4342); }

// Four int8 (bytes of w) as bf16x2 pairs (q0, q1) and (q2, q3), exactly: with u = q + 128 split
// into nibbles, q = 16 * (uh - 8) + ul.
__device__ __forceinline__ uint32_t int8_pair(uint32_t p) {
  const uint32_t ul = bf16x2_sub(low_nibbles(p), kBf16x2_128);
  const uint32_t uh8 = bf16x2_sub(high_nibbles(p), kBf16x2_136);
  return as_u32(__hfma2(as_bf162(uh8), as_bf162(kBf16x2_16), as_bf162(ul)));
}

__device__ __forceinline__ uint2 load_x8(const bf16* p, bool ok) {
  return ok ? __ldg(reinterpret_cast<const uint2*>(p)) : make_uint2(0, 0);
}

template <WeightFormat F>
struct Process;

// bf16: a lane's 16 bytes are 8 consecutive elements; two mmas, no transpose.
template <>
struct Process<WeightFormat::kBF16> {
  static __device__ __forceinline__ void run(const GemvArgs& a, int it, uint4 wa, uint4 wb,
                                             int64_t row_a, int64_t row_b, int g, int t,
                                             float (&acc)[4]) {
    const int64_t chunk = int64_t(it) * 4 + t;  // 8-element chunk of the row
    uint4 xv = make_uint4(0, 0, 0, 0);
    if (g < a.m && chunk * 16 < a.row_bytes) {
      xv = __ldg(reinterpret_cast<const uint4*>(a.x + g * a.k + chunk * 8));
    }
    mma_bf16_16816(acc, {wa.x, wb.x, wa.y, wb.y}, {xv.x, xv.y});
    mma_bf16_16816(acc, {wa.z, wb.z, wa.w, wb.w}, {xv.z, xv.w});
  }
};

// int8: an iteration covers 64 elements (two groups) per row. After the transpose, word j holds
// elements 16 j + 4t .. +3 of the iteration: one mma per word, two words per group.
template <>
struct Process<WeightFormat::kInt8> {
  static __device__ __forceinline__ void run(const GemvArgs& a, int it, uint4 wa, uint4 wb,
                                             int64_t row_a, int64_t row_b, int g, int t,
                                             float (&acc)[4]) {
    uint32_t ra[4] = {wa.x, wa.y, wa.z, wa.w};
    uint32_t rb[4] = {wb.x, wb.y, wb.z, wb.w};
    quad_transpose(ra, t);
    quad_transpose(rb, t);
    const int64_t group0 = int64_t(it) * 2;
    float sa[2], sb[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const bool ok = group0 + i < a.groups;
      sa[i] = ok ? __half2float(a.scales[row_a * a.groups + group0 + i]) : 0.0f;
      sb[i] = ok ? __half2float(a.scales[row_b * a.groups + group0 + i]) : 0.0f;
    }
    const int64_t elem0 = int64_t(it) * 64 + 4 * t;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int j = 2 * i + h;
        const int64_t e = elem0 + 16 * j;
        const uint2 xv = load_x8(a.x + g * a.k + e, g < a.m && e < a.k);
        const uint32_t ua = ra[j] ^ 0x80808080u, ub = rb[j] ^ 0x80808080u;
        mma_bf16_16816(part,
                       {int8_pair(bytes01(ua)), int8_pair(bytes01(ub)), int8_pair(bytes23(ua)),
                        int8_pair(bytes23(ub))},
                       {xv.x, xv.y});
      }
      acc[0] = fmaf(sa[i], part[0], acc[0]);
      acc[1] = fmaf(sa[i], part[1], acc[1]);
      acc[2] = fmaf(sb[i], part[2], acc[2]);
      acc[3] = fmaf(sb[i], part[3], acc[3]);
    }
  }
};

// int4: an iteration covers 4 groups (128 elements) per row. After the transpose, word j holds
// bytes 4t .. 4t+3 of group j: low nibbles are elements 4t .. 4t+3, high nibbles 16 + 4t .. +3.
template <>
struct Process<WeightFormat::kInt4> {
  static __device__ __forceinline__ void run(const GemvArgs& a, int it, uint4 wa, uint4 wb,
                                             int64_t row_a, int64_t row_b, int g, int t,
                                             float (&acc)[4]) {
    uint32_t ra[4] = {wa.x, wa.y, wa.z, wa.w};
    uint32_t rb[4] = {wb.x, wb.y, wb.z, wb.w};
    quad_transpose(ra, t);
    quad_transpose(rb, t);
    const int64_t group0 = int64_t(it) * 4;
    float sa[4], sb[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const bool ok = group0 + j < a.groups;
      sa[j] = ok ? __half2float(a.scales[row_a * a.groups + group0 + j]) : 0.0f;
      sb[j] = ok ? __half2float(a.scales[row_b * a.groups + group0 + j]) : 0.0f;
    }
    const bool x_row = g < a.m;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t e = (group0 + j) * 32 + 4 * t;
      const bool ok = x_row && group0 + j < a.groups;
      const uint2 xl = load_x8(a.x + g * a.k + e, ok);
      const uint2 xh = load_x8(a.x + g * a.k + e + 16, ok);
      const uint32_t a01 = bytes01(ra[j]), a23 = bytes23(ra[j]);
      const uint32_t b01 = bytes01(rb[j]), b23 = bytes23(rb[j]);
      float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      mma_bf16_16816(
          part,
          {bf16x2_sub(low_nibbles(a01), kBf16x2_136), bf16x2_sub(low_nibbles(b01), kBf16x2_136),
           bf16x2_sub(low_nibbles(a23), kBf16x2_136), bf16x2_sub(low_nibbles(b23), kBf16x2_136)},
          {xl.x, xl.y});
      mma_bf16_16816(
          part,
          {bf16x2_sub(high_nibbles(a01), kBf16x2_136), bf16x2_sub(high_nibbles(b01), kBf16x2_136),
           bf16x2_sub(high_nibbles(a23), kBf16x2_136), bf16x2_sub(high_nibbles(b23), kBf16x2_136)},
          {xh.x, xh.y});
      acc[0] = fmaf(sa[j], part[0], acc[0]);
      acc[1] = fmaf(sa[j], part[1], acc[1]);
      acc[2] = fmaf(sb[j], part[2], acc[2]);
      acc[3] = fmaf(sb[j], part[3], acc[3]);
    }
  }
};

template <typename OutT>
__device__ __forceinline__ void store_out(OutT* y, int64_t n, int m, int64_t row, int col,
                                          float v) {
  if (row < n && col < m) y[col * n + row] = from_float<OutT>(v);
}

template <WeightFormat F, typename OutT>
__global__ void __launch_bounds__(kThreads) gemv_kernel(GemvArgs a, OutT* __restrict__ y) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t tile = blockIdx.x;
  const int split = blockIdx.y;
  // Rows past n load row n - 1 (valid memory); their results are not stored.
  const int64_t row_a = min(tile * kTileRows + g, a.n - 1);
  const int64_t row_b = min(tile * kTileRows + g + 8, a.n - 1);
  const uint8_t* pa = a.w + row_a * a.row_bytes + t * 16;
  const uint8_t* pb = a.w + row_b * a.row_bytes + t * 16;
  const int it_begin = static_cast<int>(int64_t(a.iters) * split / a.splits);
  const int it_end = static_cast<int>(int64_t(a.iters) * (split + 1) / a.splits);

  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int base = it_begin + warp * kUnroll; base < it_end; base += kWarps * kUnroll) {
    uint4 wa[kUnroll], wb[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t offset = int64_t(base + u) * kIterBytes;
      const bool ok = base + u < it_end && offset + t * 16 < a.row_bytes;
      wa[u] = ok ? load_stream16(pa + offset) : make_uint4(0, 0, 0, 0);
      wb[u] = ok ? load_stream16(pb + offset) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (base + u < it_end) {  // uniform across the warp: the shuffles need every lane
        Process<F>::run(a, base + u, wa[u], wb[u], row_a, row_b, g, t, acc);
      }
    }
  }

  __shared__ float4 warp_sums[kWarps][32];
  warp_sums[warp][lane] = make_float4(acc[0], acc[1], acc[2], acc[3]);
  __syncthreads();
  if (warp != 0) return;
  float4 s = warp_sums[0][lane];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) {
    const float4 o = warp_sums[w][lane];
    s.x += o.x;
    s.y += o.y;
    s.z += o.z;
    s.w += o.w;
  }
  if (a.splits > 1) {
    float4* partial = reinterpret_cast<float4*>(a.partial) + tile * a.splits * 32;
    partial[split * 32 + lane] = s;
    __threadfence();  // publish the partial before counting this split as done
    __syncwarp();
    unsigned done = 0;
    if (lane == 0) done = atomicAdd(&a.counters[tile], 1u);
    done = __shfl_sync(kFullMask, done, 0);
    if (done != static_cast<unsigned>(a.splits - 1)) return;
    __threadfence();  // the other splits' partials are visible from here on
    s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int sp = 0; sp < a.splits; ++sp) {  // fixed order: deterministic sums
      const float4 o = __ldcg(&partial[sp * 32 + lane]);
      s.x += o.x;
      s.y += o.y;
      s.z += o.z;
      s.w += o.w;
    }
    if (lane == 0) a.counters[tile] = 0;  // ready for the next launch
  }
  const int64_t row0 = tile * kTileRows + g;
  store_out(y, a.n, a.m, row0, 2 * t, s.x);
  store_out(y, a.n, a.m, row0, 2 * t + 1, s.y);
  store_out(y, a.n, a.m, row0 + 8, 2 * t, s.z);
  store_out(y, a.n, a.m, row0 + 8, 2 * t + 1, s.w);
}

struct Plan {
  int64_t tiles;
  int iters;
  int splits;
  size_t scratch_bytes;
};

// Enough blocks to keep every SM streaming (about 4 blocks, 16 warps, 64 KiB of loads in flight
// per SM), splitting K only when there are too few row tiles, and never so finely that a warp
// gets no run of iterations.
Plan make_plan(const KernelContext& ctx, const DeviceWeight& w, int splits_override) {
  Plan p;
  p.tiles = (w.n + kTileRows - 1) / kTileRows;
  const int64_t row_bytes = static_cast<int64_t>(w.data_bytes() / w.n);
  p.iters = static_cast<int>((row_bytes + kIterBytes - 1) / kIterBytes);
  const int64_t target_blocks = int64_t{4} * ctx.num_sms();
  int64_t splits = 1;
  if (splits_override > 0) {
    splits = splits_override;
  } else if (p.tiles < target_blocks) {
    splits = (target_blocks + p.tiles - 1) / p.tiles;
    splits = std::min<int64_t>(splits, std::max(1, p.iters / (kWarps * kUnroll)));
  }
  splits = std::clamp<int64_t>(splits, 1, std::min(p.iters, 64));
  if (p.tiles > static_cast<int64_t>(KernelContext::kMaxCounters)) splits = 1;
  p.splits = static_cast<int>(splits);
  p.scratch_bytes = p.splits > 1 ? p.tiles * p.splits * kPartialFloats * sizeof(float) : 0;
  return p;
}

void check_weight(const DeviceWeight& w) {
  MISTRAL_CHECK(w.n > 0 && w.k > 0) << "weight shape [" << w.n << ", " << w.k << "]";
  MISTRAL_CHECK(reinterpret_cast<uintptr_t>(w.data) % 16 == 0) << "weight data not 16-byte aligned";
  if (w.format == WeightFormat::kBF16) {
    MISTRAL_CHECK(w.k % 8 == 0) << "bf16 weight k = " << w.k << " is not a multiple of 8";
  } else {
    MISTRAL_CHECK(w.k % kQuantGroup == 0)
        << weight_format_name(w.format) << " weight k = " << w.k << " is not a multiple of 32";
    MISTRAL_CHECK(w.scales != nullptr) << "quantized weight without scales";
  }
}

template <typename OutT>
void gemv_impl(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, OutT* y,
               int splits_override) {
  check_weight(w);
  MISTRAL_CHECK(m >= 1 && m <= kMaxGemvRows)
      << "gemv takes 1.." << kMaxGemvRows << " rows, got " << m;
  MISTRAL_CHECK(reinterpret_cast<uintptr_t>(x) % 16 == 0) << "x not 16-byte aligned";
  const Plan plan = make_plan(ctx, w, splits_override);
  MISTRAL_CHECK(ctx.scratch_bytes() >= plan.scratch_bytes)
      << "gemv [" << w.n << ", " << w.k << "] needs " << plan.scratch_bytes
      << " bytes of scratch; call reserve_scratch first";
  GemvArgs a;
  a.x = x;
  a.m = static_cast<int>(m);
  a.n = w.n;
  a.k = w.k;
  a.w = static_cast<const uint8_t*>(w.data);
  a.row_bytes = static_cast<int64_t>(w.data_bytes() / w.n);
  a.scales = w.scales;
  a.groups = w.k / kQuantGroup;
  a.iters = plan.iters;
  a.splits = plan.splits;
  a.partial = static_cast<float*>(ctx.scratch());
  a.counters = ctx.counters();
  const dim3 grid(static_cast<unsigned>(plan.tiles), static_cast<unsigned>(plan.splits));
  switch (w.format) {
    case WeightFormat::kBF16:
      gemv_kernel<WeightFormat::kBF16, OutT><<<grid, kThreads, 0, ctx.stream()>>>(a, y);
      break;
    case WeightFormat::kInt8:
      gemv_kernel<WeightFormat::kInt8, OutT><<<grid, kThreads, 0, ctx.stream()>>>(a, y);
      break;
    case WeightFormat::kInt4:
      gemv_kernel<WeightFormat::kInt4, OutT><<<grid, kThreads, 0, ctx.stream()>>>(a, y);
      break;
  }
  MISTRAL_CUDA_CHECK_LAUNCH();
}

}  // namespace

const char* weight_format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::kBF16:
      return "bf16";
    case WeightFormat::kInt8:
      return "int8";
    case WeightFormat::kInt4:
      return "int4";
  }
  return "?";
}

size_t DeviceWeight::data_bytes() const {
  const size_t elements = static_cast<size_t>(n) * static_cast<size_t>(k);
  switch (format) {
    case WeightFormat::kBF16:
      return elements * 2;
    case WeightFormat::kInt8:
      return elements;
    case WeightFormat::kInt4:
      return elements / 2;
  }
  return 0;
}

size_t DeviceWeight::scale_bytes() const {
  if (format == WeightFormat::kBF16) return 0;
  return static_cast<size_t>(n) * static_cast<size_t>(k / kQuantGroup) * sizeof(__half);
}

size_t gemv_scratch_bytes(const KernelContext& ctx, const DeviceWeight& w, int splits) {
  return make_plan(ctx, w, splits).scratch_bytes;
}

void gemv(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, float* y,
          int splits) {
  gemv_impl(ctx, x, m, w, y, splits);
}

void gemv(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, bf16* y,
          int splits) {
  gemv_impl(ctx, x, m, w, y, splits);
}

}  // namespace mistral::cuda
