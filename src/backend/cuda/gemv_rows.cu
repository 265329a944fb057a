// Decode GEMV for bf16 weights, streaming whole rows: y[m, n] = x[m, k] * W^T for m <= 8.
//
// One warp per row of W at a time (8 warps per block, consecutive rows). Each lane reads 16-byte
// pieces of the row (pieces lane, lane + 32, ...), issuing 8 loads (4 KB per warp) before it uses
// any, so every warp keeps a long contiguous span of the row in flight; W is read once, with
// no-L1-allocate loads, and x (a few KB, shared by every warp) through the caches. Products are
// summed in float32 with fmaf, element after element within a piece and piece after piece per
// lane, then across lanes by a fixed xor-shuffle tree: the order does not depend on m, so a row
// of x gives the same bits alone or in a batch, and on every run.
#include <cuda_bf16.h>

#include <cstdlib>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/gemv_rows.h"

namespace mistral::cuda {
namespace {

using namespace device;

constexpr int kWarps = 8;
constexpr int kInFlight = 8;  // 16-byte loads per lane before the first use

template <typename OutT, int M>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_rows_kernel(const bf16* __restrict__ x, int64_t n, int k, const bf16* __restrict__ w,
                     OutT* __restrict__ y) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= n) return;
  const uint4* wr = reinterpret_cast<const uint4*>(w + row * int64_t(k));
  const int pieces = k / 8;
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0.0f;
  for (int base = 0; base < pieces; base += 32 * kInFlight) {
    uint4 wv[kInFlight];
#pragma unroll
    for (int i = 0; i < kInFlight; ++i) {
      const int c = base + i * 32 + lane;
      wv[i] = c < pieces ? load_stream16(wr + c) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int i = 0; i < kInFlight; ++i) {
      const int c = base + i * 32 + lane;
      if (c < pieces) {
        const bf16* we = reinterpret_cast<const bf16*>(&wv[i]);
        float wf[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) wf[e] = __bfloat162float(we[e]);
#pragma unroll
        for (int r = 0; r < M; ++r) {
          const uint4 xv = __ldg(reinterpret_cast<const uint4*>(x + int64_t(r) * k) + c);
          const bf16* xe = reinterpret_cast<const bf16*>(&xv);
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[r] = fmaf(wf[e], __bfloat162float(xe[e]), acc[r]);
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

template <typename OutT, int M>
void launch_rows(KernelContext& ctx, const bf16* x, int64_t n, int k, const bf16* w, OutT* y) {
  const int64_t blocks = (n + kWarps - 1) / kWarps;
  gemv_rows_kernel<OutT, M>
      <<<static_cast<unsigned>(blocks), kWarps * 32, 0, ctx.stream()>>>(x, n, k, w, y);
}

template <typename OutT>
void gemv_rows_impl(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, OutT* y) {
  MISTRAL_CHECK(w.format == WeightFormat::kBF16) << "gemv_rows takes bf16 weights";
  MISTRAL_CHECK(m >= 1 && m <= kMaxGemvRows) << "gemv_rows m = " << m;
  MISTRAL_CHECK(w.k % 8 == 0 && w.k < (int64_t{1} << 30)) << "gemv_rows k = " << w.k;
  MISTRAL_CHECK((reinterpret_cast<uintptr_t>(w.data) | reinterpret_cast<uintptr_t>(x)) % 16 == 0)
      << "gemv_rows: x and W must be 16-byte aligned";
  const auto* wd = static_cast<const bf16*>(w.data);
  const int k = static_cast<int>(w.k);
  switch (m) {
    case 1:
      launch_rows<OutT, 1>(ctx, x, w.n, k, wd, y);
      break;
    case 2:
      launch_rows<OutT, 2>(ctx, x, w.n, k, wd, y);
      break;
    case 3:
      launch_rows<OutT, 3>(ctx, x, w.n, k, wd, y);
      break;
    case 4:
      launch_rows<OutT, 4>(ctx, x, w.n, k, wd, y);
      break;
    case 5:
      launch_rows<OutT, 5>(ctx, x, w.n, k, wd, y);
      break;
    case 6:
      launch_rows<OutT, 6>(ctx, x, w.n, k, wd, y);
      break;
    case 7:
      launch_rows<OutT, 7>(ctx, x, w.n, k, wd, y);
      break;
    default:
      launch_rows<OutT, 8>(ctx, x, w.n, k, wd, y);
      break;
  }
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
  return w.format == WeightFormat::kBF16 && options.warps == 0 && options.stages == 0 &&
         !pipelined_only;
}

}  // namespace mistral::cuda
