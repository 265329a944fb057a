// Expands rows of a weight matrix to bf16 for the prefill GEMM's dequantize-then-cuBLASLt path.
// One thread per 8 outputs, float32 scale * q rounded once to bf16: a warp's stores are 512
// contiguous bytes (a thread per group of 32, storing 64 bytes, left each store instruction
// spread over 2 KB in 32 half-filled sectors).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/kernel_launch.h"
#include "backend/cuda/kernels.h"

namespace mistral::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxRowBlocks = 65535;  // grid y: rows y, y + gridDim.y, ...

// Piece p (8 outputs) of a row is part p % 4 of group p / 4. int8: bytes 8 (p % 4) onward of the
// group's 32. int4: byte j of a group's 16 holds element j in its low nibble and j + 16 in its
// high one, so parts 0 and 1 are the low nibbles of bytes 0-7 and 8-15, parts 2 and 3 the high.
template <WeightFormat F>
__global__ void dequantize_kernel(const uint8_t* __restrict__ data,
                                  const __half* __restrict__ scales, int64_t k, int64_t row_begin,
                                  int64_t rows, bf16* __restrict__ out) {
  device::begin_after_prior_kernels();
  const int pieces = static_cast<int>(k / 8);
  const int piece = blockIdx.x * kThreads + threadIdx.x;
  if (piece >= pieces) return;
  const int grp = piece / 4, part = piece % 4;
  const int64_t groups = k / kQuantGroup;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t src_row = row_begin + r;
    const float s = __half2float(scales[src_row * groups + grp]);
    float v[8];
    if constexpr (F == WeightFormat::kInt8) {
      const uint2 q = *reinterpret_cast<const uint2*>(data + src_row * k + int64_t{piece} * 8);
      const uint32_t words[2] = {q.x, q.y};
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        v[i] = static_cast<float>(static_cast<int8_t>(words[i / 4] >> (8 * (i % 4))));
      }
    } else {
      const uint2 q = *reinterpret_cast<const uint2*>(data + src_row * (k / 2) + int64_t{grp} * 16 +
                                                      (part % 2) * 8);
      const uint32_t words[2] = {q.x, q.y};
      const int shift = part < 2 ? 0 : 4;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        v[i] = static_cast<float>(static_cast<int>((words[i / 4] >> (8 * (i % 4) + shift)) & 0xfu) -
                                  8);
      }
    }
    __nv_bfloat162 pairs[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) pairs[i] = __floats2bfloat162_rn(s * v[2 * i], s * v[2 * i + 1]);
    reinterpret_cast<uint4*>(out + r * k)[piece] = *reinterpret_cast<const uint4*>(pairs);
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
  const dim3 blocks(static_cast<unsigned>((w.k / 8 + kThreads - 1) / kThreads),
                    static_cast<unsigned>(std::min<int64_t>(rows, kMaxRowBlocks)));
  const auto* data = static_cast<const uint8_t*>(w.data);
  if (w.format == WeightFormat::kInt8) {
    launch_kernel(ctx, dequantize_kernel<WeightFormat::kInt8>, blocks, kThreads, 0, data, w.scales,
                  w.k, row_begin, rows, out);
  } else {
    launch_kernel(ctx, dequantize_kernel<WeightFormat::kInt4>, blocks, kThreads, 0, data, w.scales,
                  w.k, row_begin, rows, out);
  }
  MISTRAL_CUDA_CHECK_LAUNCH();
}

}  // namespace mistral::cuda
