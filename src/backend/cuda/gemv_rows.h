// The row-streaming bf16 decode GEMV (gemv_rows.cu): gemv() takes it for bf16 weights with the
// default options unless MISTRAL_GEMV_KERNEL=pipelined asks for the cp.async tile kernel of
// gemv.cu (which quantized weights and explicit GemvOptions always use). Same contract as gemv:
// 1 <= m <= kMaxGemvRows, k a multiple of 8, 16-byte aligned x and W, results independent of m.
#pragma once

#include "backend/cuda/kernels.h"

namespace mistral::cuda {

void gemv_rows(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, float* y);
void gemv_rows(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, bf16* y);
bool use_gemv_rows(const DeviceWeight& w, const GemvOptions& options);

}  // namespace mistral::cuda
