// The row-streaming decode GEMV (gemv_rows.cu): gemv() takes it with the default options unless
// MISTRAL_GEMV_KERNEL=pipelined asks for the cp.async tile kernel of gemv.cu (which explicit
// GemvOptions always use). Same contract as gemv (1 <= m <= kMaxGemvRows, k a multiple of 8, or
// of 32 when quantized, 16-byte aligned x and W, results independent of m), except that with
// int8 / int4 weights x is quantized to int8 per group of 32 first, as on the CPU backend, which
// needs gemv_rows_scratch_bytes of the context's scratch.
#pragma once

#include "backend/cuda/kernels.h"

namespace mistral::cuda {

void gemv_rows(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, float* y);
void gemv_rows(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, bf16* y);
bool use_gemv_rows(const DeviceWeight& w, const GemvOptions& options);
size_t gemv_rows_scratch_bytes(const DeviceWeight& w);

}  // namespace mistral::cuda
