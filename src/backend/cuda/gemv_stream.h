// The decode GEMV with fused ops (kernels.h, gemv_fused) through a bulk-copy pipeline, for sm_90
// and later: gemv_stream.cu. gemv_fused takes it instead of its register-streaming kernel when
// asked (GemvFusedKernel::kBulkCopy, or MISTRAL_GEMV_STREAM=1) and it fits; both give the same
// bits. Included by gemv_fused.cu alone.
#pragma once

#include "backend/cuda/gemv_fused_parts.cuh"
#include "backend/cuda/kernel_context.h"

namespace mistral::cuda::fused_gemv {

// Whether this GPU, weight and fusion can take the pipeline: sm_90 or later, quantized rows whose
// group scales come in 16-byte pieces (k a multiple of 256, scales 16-byte aligned), and shared
// memory for x and the ring.
bool gemv_stream_fits(const KernelContext& ctx, const DeviceWeight& w, const GemvFusion& f);

void gemv_stream(KernelContext& ctx, const FusedArgs& a, WeightFormat format, GemvOutput output,
                 bf16* y);
void gemv_stream(KernelContext& ctx, const FusedArgs& a, WeightFormat format, GemvOutput output,
                 float* y);

}  // namespace mistral::cuda::fused_gemv
