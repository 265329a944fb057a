// Decode GEMV streaming whole rows of W: y[m, n] = x[m, k] * W^T for m <= 8.
//
// One warp per row of W at a time (8 warps per block, consecutive rows; bf16 with 3 or more rows
// of x: two rows of W per warp, see rows_per_warp). Each lane reads 16-byte pieces of the row
// (pieces lane, lane + 32, ...), issuing 4 loads (2 KB per warp) before it uses any; W is read
// once, with no-L1-allocate loads, and x (a few KB, shared by every warp) through the caches. Four
// loads per lane keep the bf16 registers at 40-64 with one row of W per warp (80-126 with two,
// and half the warps): on an H200 this beat 8 loads (54-72 registers) end to end by 4% (bf16),
// 19% (int8) and 11% (int4); 2 loads tied for bf16 and lost for int8/int4 (bench/RESULTS.md).
// Every kernel is started as a programmatic dependent launch and issues its first weight loads
// before it waits for the kernel before it (kernel_launch.h). Products are summed in float32
// with fmaf, element after element within a piece and piece after piece per lane, then across
// lanes by a fixed xor-shuffle tree: the order does not depend on m (nor on the rows of W per
// warp), so a row of x gives the same bits alone or in a batch, and on every run.
//
// int8 / int4 weights: x is first quantized per row and group of 32 as the CPU backend does
// (dx = max|x| / 127, xq = round-half-even(x * 127 / max|x|), into the context's scratch), so a
// group's dot product is an exact integer sum of __dp4a products (int4: nibbles n as bytes, then
// minus 8 * sum(xq)), scaled in float32 by the weight's f16 scale times dx. A piece's scale is
// loaded with the piece (not after it arrives: that was a second trip to memory per row).
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/gemv_pieces.cuh"
#include "backend/cuda/gemv_rows.h"
#include "backend/cuda/kernel_launch.h"
#include "core/env.h"

namespace mistral::cuda {
namespace {

using namespace device;

constexpr int kWarps = kRowWarps;
constexpr int kInFlight = kRowLoadsInFlight;

// P rows of W per warp (rows P * warp .. P * warp + P - 1 of the block's kWarps * P): each piece
// of x is loaded and converted once for the P rows. Every (row of W, row of x) sum takes the same
// products in the same order whatever P is, so P does not change the bits.
template <typename OutT, int M, int L, int P>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_rows_kernel(const bf16* __restrict__ x, int64_t n, int k, const bf16* __restrict__ w,
                     OutT* __restrict__ y) {
  const int lane = threadIdx.x % 32;
  const int64_t row0 = (int64_t(blockIdx.x) * kWarps + threadIdx.x / 32) * P;
  allow_next_kernel();
  if (row0 >= n) return wait_for_prior_kernels();
  const int pieces = k / 8;
  float acc[P][M];
  uint4 wv[P][L];
#pragma unroll
  for (int p = 0; p < P; ++p) {
#pragma unroll
    for (int r = 0; r < M; ++r) acc[p][r] = 0.0f;
  }
  // Row row0 + p of W (the first row stands in past n: loaded, never stored).
  auto row_of = [&](int p) {
    const int64_t row = row0 + p < n ? row0 + p : row0;
    return reinterpret_cast<const uint4*>(w + row * int64_t(k));
  };
#pragma unroll
  for (int p = 0; p < P; ++p) load_pieces(row_of(p), pieces, 0, lane, wv[p]);  // no kernel writes W
  wait_for_prior_kernels();
  for (int base = 0; base < pieces; base += 32 * L) {
    if (base > 0) {
#pragma unroll
      for (int p = 0; p < P; ++p) load_pieces(row_of(p), pieces, base, lane, wv[p]);
    }
#pragma unroll
    for (int i = 0; i < L; ++i) {
      const int c = base + i * 32 + lane;
      if (c < pieces) {
        float wf[P][8];
#pragma unroll
        for (int p = 0; p < P; ++p) {
          const bf16* we = reinterpret_cast<const bf16*>(&wv[p][i]);
#pragma unroll
          for (int e = 0; e < 8; ++e) wf[p][e] = __bfloat162float(we[e]);
        }
#pragma unroll
        for (int r = 0; r < M; ++r) {
          const uint4 xv = __ldg(reinterpret_cast<const uint4*>(x + int64_t(r) * k) + c);
          const bf16* xe = reinterpret_cast<const bf16*>(&xv);
          float xf[8];
#pragma unroll
          for (int e = 0; e < 8; ++e) xf[e] = __bfloat162float(xe[e]);
#pragma unroll
          for (int p = 0; p < P; ++p) {
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[p][r] = fmaf(wf[p][e], xf[e], acc[p][r]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int p = 0; p < P; ++p) {
#pragma unroll
    for (int r = 0; r < M; ++r) {
      const float sum = warp_sum(acc[p][r]);
      if (lane == 0 && row0 + p < n) y[int64_t(r) * n + row0 + p] = from_float<OutT>(sum);
    }
  }
}

// Calls f(std::integral_constant<int, m>) for 1 <= m <= kMaxGemvRows: the kernels take the
// number of rows of x as a template argument.
template <typename Fn>
void with_rows(int64_t m, Fn&& f) {
  switch (m) {
    case 1:
      return f(std::integral_constant<int, 1>());
    case 2:
      return f(std::integral_constant<int, 2>());
    case 3:
      return f(std::integral_constant<int, 3>());
    case 4:
      return f(std::integral_constant<int, 4>());
    case 5:
      return f(std::integral_constant<int, 5>());
    case 6:
      return f(std::integral_constant<int, 6>());
    case 7:
      return f(std::integral_constant<int, 7>());
    default:
      return f(std::integral_constant<int, 8>());
  }
}

// One thread per group of 32 values of x (rows are contiguous, k a multiple of 32).
__global__ void quantize_x_kernel(const bf16* __restrict__ x, int64_t groups,
                                  int8_t* __restrict__ xq, float* __restrict__ dx,
                                  int* __restrict__ xsum) {
  device::begin_after_prior_kernels();
  const int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g >= groups) return;
  float v[32];
  const uint4* src = reinterpret_cast<const uint4*>(x + g * 32);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint4 raw = src[i];
    const bf16* e = reinterpret_cast<const bf16*>(&raw);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[i * 8 + j] = __bfloat162float(e[j]);
  }
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < 32; ++i) amax = fmaxf(amax, fabsf(v[i]));
  int sum = 0;
  uint32_t packed[8];
  device::quantize_x_values(v, amax, packed, sum);
  uint4* dst = reinterpret_cast<uint4*>(xq + g * 32);
  dst[0] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
  dst[1] = make_uint4(packed[4], packed[5], packed[6], packed[7]);
  dx[g] = device::x_group_scale(amax);
  xsum[g] = sum;
}

// A warp per row as in the bf16 kernel; a 16-byte piece is half a group (int8) or one group
// (int4: byte j holds value j in its low nibble and value j + 16 in its high one). (Joining two
// short int4 rows per warp, so that every lane has 8 loads in flight at k = 4096, measured 7%
// slower end to end on the H100: fewer warps.)
template <WeightFormat F, typename OutT, int M, int L>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_rows_quant_kernel(const int8_t* __restrict__ xq, const float* __restrict__ dx,
                           const int* __restrict__ xsum, int64_t n, int k,
                           const uint8_t* __restrict__ w, const __half* __restrict__ scales,
                           OutT* __restrict__ y) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  allow_next_kernel();
  if (row >= n) return wait_for_prior_kernels();
  const int groups = k / 32;
  const int row_bytes = F == WeightFormat::kInt8 ? k : k / 2;
  const int pieces = row_bytes / 16;
  const uint4* wr = reinterpret_cast<const uint4*>(w + row * int64_t(row_bytes));
  const __half* sr = scales + row * int64_t(groups);
  // A piece's group: int8 pieces are half a group, int4 pieces one.
  auto group_of = [](int c) { return F == WeightFormat::kInt8 ? c / 2 : c; };
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0.0f;
  uint4 wv[L];
  __half sv[L];
  // The weights and their scales (no kernel writes them) are on their way together, so the
  // scales cost no second trip to memory after the weights arrive.
  load_pieces(wr, pieces, 0, lane, wv);
  load_scales(sr, pieces, 0, lane, group_of, sv);
  wait_for_prior_kernels();
  for (int base = 0; base < pieces; base += 32 * L) {
    if (base > 0) {
      load_pieces(wr, pieces, base, lane, wv);
      load_scales(sr, pieces, base, lane, group_of, sv);
    }
#pragma unroll
    for (int i = 0; i < L; ++i) {
      const int c = base + i * 32 + lane;
      if (c < pieces) {
        const int g = group_of(c);
        const float scale = __half2float(sv[i]);
        const uint4 wq = wv[i];
        uint4 lo, hi;
        split_nibbles(wq, lo, hi);
#pragma unroll
        for (int r = 0; r < M; ++r) {
          const uint4* xr = reinterpret_cast<const uint4*>(xq + int64_t(r) * k);
          int isum;
          if constexpr (F == WeightFormat::kInt8) {
            isum = dot16(wq, __ldg(xr + c), 0);
          } else {
            isum = dot16(hi, __ldg(xr + 2 * c + 1), dot16(lo, __ldg(xr + 2 * c), 0)) -
                   8 * xsum[int64_t(r) * groups + g];
          }
          acc[r] = fmaf(float(isum), scale * dx[int64_t(r) * groups + g], acc[r]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < M; ++r) {
    const float sum = warp_sum(acc[r]);
    if (lane == 0) y[int64_t(r) * n + row] = from_float<OutT>(sum);
  }
}

// Where the quantized kernels keep xq, dx and the group sums in the scratch.
struct QuantScratch {
  size_t xq = 0, dx = 0, xsum = 0, bytes = 0;
};
QuantScratch quant_scratch(int64_t m, int64_t k) {
  QuantScratch s;
  const size_t groups = static_cast<size_t>(m * (k / 32));
  s.dx = (static_cast<size_t>(m * k) + 255) / 256 * 256;
  s.xsum = s.dx + (groups * sizeof(float) + 255) / 256 * 256;
  s.bytes = s.xsum + groups * sizeof(int);
  return s;
}

// 16-byte loads each lane has in flight before it uses the first: kInFlight, or
// MISTRAL_GEMV_INFLIGHT (2, 4 or 8; for benchmarks).
template <typename Fn>
void with_loads_in_flight(Fn&& f) {
  static const int forced = env_int("MISTRAL_GEMV_INFLIGHT", kInFlight);
  if (forced == 2) return f(std::integral_constant<int, 2>());
  if (forced == 8) return f(std::integral_constant<int, 8>());
  return f(std::integral_constant<int, kInFlight>());
}

template <WeightFormat F, typename OutT, int M>
void launch_rows_quant(KernelContext& ctx, const QuantScratch& s, int64_t n, int k,
                       const DeviceWeight& w, OutT* y) {
  auto* base = static_cast<uint8_t*>(ctx.scratch());
  const auto blocks = static_cast<unsigned>((n + kWarps - 1) / kWarps);
  with_loads_in_flight([&](auto loads) {
    launch_kernel(ctx, gemv_rows_quant_kernel<F, OutT, M, loads()>, blocks, kWarps * 32, 0,
                  reinterpret_cast<const int8_t*>(base + s.xq),
                  reinterpret_cast<const float*>(base + s.dx),
                  reinterpret_cast<const int*>(base + s.xsum), n, k,
                  static_cast<const uint8_t*>(w.data), w.scales, y);
  });
}

template <WeightFormat F, typename OutT>
void rows_quant(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, OutT* y) {
  const QuantScratch s = quant_scratch(m, w.k);
  MISTRAL_CHECK(ctx.scratch_bytes() >= s.bytes)
      << "gemv of a " << weight_format_name(w.format) << " weight needs " << s.bytes
      << " bytes of scratch; call reserve_scratch first";
  auto* base = static_cast<uint8_t*>(ctx.scratch());
  const int64_t groups = m * (w.k / 32);
  constexpr int kThreads = 128;
  launch_kernel(ctx, quantize_x_kernel, static_cast<unsigned>((groups + kThreads - 1) / kThreads),
                kThreads, 0, x, groups, reinterpret_cast<int8_t*>(base + s.xq),
                reinterpret_cast<float*>(base + s.dx), reinterpret_cast<int*>(base + s.xsum));
  MISTRAL_CUDA_CHECK_LAUNCH();
  const int k = static_cast<int>(w.k);
  with_rows(m, [&](auto rows) { launch_rows_quant<F, OutT, rows()>(ctx, s, w.n, k, w, y); });
  MISTRAL_CUDA_CHECK_LAUNCH();
}

// Rows of W per warp for m rows of x: 2 from 3 rows of x up, where each row of W converted every
// piece of x to float again and the conversions took more issue slots than the products; 1 below
// (MISTRAL_GEMV_ROW_PAIRS=0: 1 always). On an H100, bf16 decode at batch 8 went from 743 to
// 938-945 tok/s, at batch 3 from 372 to 390; at batch 2 pairs lost (309 against 323): the warps
// are halved there and the conversions are fewer (bench/RESULTS.md, 2026-12-07).
template <int M>
int rows_per_warp() {
  static const bool pairs = env_enabled("MISTRAL_GEMV_ROW_PAIRS");
  return M >= 3 && pairs ? 2 : 1;
}

template <typename OutT, int M>
void launch_rows(KernelContext& ctx, const bf16* x, int64_t n, int k, const bf16* w, OutT* y) {
  auto launch = [&](auto per_warp) {
    constexpr int kP = decltype(per_warp)::value;
    const auto blocks = static_cast<unsigned>((n + kWarps * kP - 1) / (kWarps * kP));
    with_loads_in_flight([&](auto loads) {
      launch_kernel(ctx, gemv_rows_kernel<OutT, M, loads(), kP>, blocks, kWarps * 32, 0, x, n, k, w,
                    y);
    });
  };
  if (rows_per_warp<M>() == 2) return launch(std::integral_constant<int, 2>());
  launch(std::integral_constant<int, 1>());
}

template <typename OutT>
void gemv_rows_impl(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, OutT* y) {
  MISTRAL_CHECK(m >= 1 && m <= kMaxGemvRows) << "gemv_rows m = " << m;
  MISTRAL_CHECK(reinterpret_cast<uintptr_t>(x) % 16 == 0) << "gemv_rows: x not 16-byte aligned";
  if (w.format == WeightFormat::kInt8) return rows_quant<WeightFormat::kInt8>(ctx, x, m, w, y);
  if (w.format == WeightFormat::kInt4) return rows_quant<WeightFormat::kInt4>(ctx, x, m, w, y);
  MISTRAL_CHECK(w.k % 8 == 0 && w.k < (int64_t{1} << 30)) << "gemv_rows k = " << w.k;
  MISTRAL_CHECK((reinterpret_cast<uintptr_t>(w.data) | reinterpret_cast<uintptr_t>(x)) % 16 == 0)
      << "gemv_rows: x and W must be 16-byte aligned";
  const auto* wd = static_cast<const bf16*>(w.data);
  const int k = static_cast<int>(w.k);
  with_rows(m, [&](auto rows) { launch_rows<OutT, rows()>(ctx, x, w.n, k, wd, y); });
  MISTRAL_CUDA_CHECK_LAUNCH();
}

}  // namespace

void gemv_rows(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, float* y) {
  gemv_rows_impl(ctx, x, m, w, y);
}
void gemv_rows(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, bf16* y) {
  gemv_rows_impl(ctx, x, m, w, y);
}

bool use_gemv_rows(const DeviceWeight& w, const GemvOptions& options) {
  static const bool pipelined_only = [] {
    const char* env = std::getenv("MISTRAL_GEMV_KERNEL");
    return env != nullptr && std::string(env) == "pipelined";
  }();
  return options.warps == 0 && options.stages == 0 && !pipelined_only;
}

size_t gemv_rows_scratch_bytes(const DeviceWeight& w) {
  return w.format == WeightFormat::kBF16 ? 0 : quant_scratch(kMaxGemvRows, w.k).bytes;
}

}  // namespace mistral::cuda
