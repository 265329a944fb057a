#include "backend/cuda/kernel_context.h"

#include "backend/cuda/cuda_check.h"
#include "core/env.h"

namespace mistral::cuda {

namespace {
// NVIDIA's recommended cuBLASLt workspace for Hopper (32 MiB); older GPUs use less of it.
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;
}  // namespace

Result<std::unique_ptr<KernelContext>> KernelContext::create(cudaStream_t stream,
                                                             size_t scratch_bytes) {
  std::unique_ptr<KernelContext> ctx(new KernelContext());
  ctx->stream_ = stream;
  MISTRAL_CUDA_CHECK(cudaGetDevice(&ctx->device_));
  MISTRAL_CUDA_CHECK(cudaGetDeviceProperties(&ctx->props_, ctx->device_));
  ctx->overlap_launches_ = ctx->props_.major >= 9 && env_enabled("MISTRAL_CUDA_PDL");
  MISTRAL_ASSIGN_OR_RETURN(ctx->lt_workspace_,
                           DeviceBuffer::allocate(kCublasWorkspaceBytes, "cuBLASLt workspace"));
  MISTRAL_ASSIGN_OR_RETURN(ctx->scratch_,
                           DeviceBuffer::allocate(scratch_bytes, "CUDA kernel scratch"));
  MISTRAL_ASSIGN_OR_RETURN(
      ctx->counters_, DeviceBuffer::allocate(kMaxCounters * sizeof(unsigned), "split-K counters"));
  MISTRAL_CUDA_CHECK(cudaMemsetAsync(ctx->counters_.data(), 0, ctx->counters_.bytes(), stream));
  MISTRAL_CUBLAS_CHECK(cublasLtCreate(&ctx->lt_));
  MISTRAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  return ctx;
}

KernelContext::~KernelContext() {
  // Kernels still queued may use the buffers freed below.
  MISTRAL_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (lt_ != nullptr) MISTRAL_CUBLAS_CHECK(cublasLtDestroy(lt_));
}

Status KernelContext::reserve_scratch(size_t bytes) {
  if (bytes <= scratch_.bytes()) return Status::ok_status();
  MISTRAL_CUDA_CHECK(cudaStreamSynchronize(stream_));
  scratch_ = DeviceBuffer();  // free first, so the old and new blocks need not fit together
  MISTRAL_ASSIGN_OR_RETURN(scratch_, DeviceBuffer::allocate(bytes, "CUDA kernel scratch"));
  return Status::ok_status();
}

}  // namespace mistral::cuda
