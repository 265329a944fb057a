// Expands rows of a weight matrix to bf16 for the prefill GEMM's dequantize-then-cuBLASLt path.
// One thread per group of 32 elements (int8: 32 bytes, int4: 16 bytes), float32 scale * q rounded
// once to bf16.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/kernel_launch.h"
#include "backend/cuda/kernels.h"

namespace mistral::cuda {
namespace {

template <WeightFormat F>
__global__ void dequantize_kernel(const uint8_t* __restrict__ data,
                                  const __half* __restrict__ scales, int64_t k, int64_t row_begin,
                                  int64_t rows, bf16* __restrict__ out) {
  device::begin_after_prior_kernels();
  const int64_t groups = k / kQuantGroup;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * groups) return;
  const int64_t r = idx / groups, grp = idx % groups;
  const int64_t src_row = row_begin + r;
  const float s = __half2float(scales[src_row * groups + grp]);
  float v[32];
  if constexpr (F == WeightFormat::kInt8) {
    const uint4* p = reinterpret_cast<const uint4*>(data + src_row * k + grp * 32);
    const uint4 lo = p[0], hi = p[1];
    const uint32_t words[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      v[i] = static_cast<float>(static_cast<int8_t>(words[i / 4] >> (8 * (i % 4))));
    }
  } else {
    const uint4 q = *reinterpret_cast<const uint4*>(data + src_row * (k / 2) + grp * 16);
    const uint32_t words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const uint32_t byte = (words[j / 4] >> (8 * (j % 4))) & 0xffu;
      v[j] = static_cast<float>(static_cast<int>(byte & 0xfu) - 8);
      v[j + 16] = static_cast<float>(static_cast<int>(byte >> 4) - 8);
    }
  }
  uint4* dst = reinterpret_cast<uint4*>(out + r * k + grp * 32);
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    __nv_bfloat162 pairs[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      pairs[i] = __floats2bfloat162_rn(s * v[8 * c + 2 * i], s * v[8 * c + 2 * i + 1]);
    }
    dst[c] = *reinterpret_cast<const uint4*>(pairs);
  }
}

}  // namespace

void dequantize(KernelContext& ctx, const DeviceWeight& w, int64_t row_begin, int64_t row_end,
                bf16* out) {
  MISTRAL_CHECK(0 <= row_begin && row_begin <= row_end && row_end <= w.n)
      << "rows [" << row_begin << ", " << row_end << ") of " << w.n;
  MISTRAL_CHECK(reinterpret_cast<uintptr_t>(out) % 16 == 0) << "out not 16-byte aligned";
  const int64_t rows = row_end - row_begin;
  if (rows == 0) return;
  if (w.format == WeightFormat::kBF16) {
    MISTRAL_CUDA_CHECK(cudaMemcpyAsync(out, static_cast<const bf16*>(w.data) + row_begin * w.k,
                                       static_cast<size_t>(rows * w.k) * sizeof(bf16),
                                       cudaMemcpyDeviceToDevice, ctx.stream()));
    return;
  }
  MISTRAL_CHECK(w.k % kQuantGroup == 0 && w.scales != nullptr) << "bad quantized weight";
  const int64_t work = rows * (w.k / kQuantGroup);
  const int threads = 256;
  const auto blocks = static_cast<unsigned>((work + threads - 1) / threads);
  const auto* data = static_cast<const uint8_t*>(w.data);
  if (w.format == WeightFormat::kInt8) {
    launch_kernel(ctx, dequantize_kernel<WeightFormat::kInt8>, blocks, threads, 0, data, w.scales,
                  w.k, row_begin, rows, out);
  } else {
    launch_kernel(ctx, dequantize_kernel<WeightFormat::kInt4>, blocks, threads, 0, data, w.scales,
                  w.k, row_begin, rows, out);
  }
  MISTRAL_CUDA_CHECK_LAUNCH();
}

}  // namespace mistral::cuda
