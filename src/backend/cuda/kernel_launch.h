// launch_kernel: the one way the CUDA backend starts its own kernels. On sm_90 and later (unless
// MISTRAL_CUDA_PDL=0) a launch is a programmatic dependent launch: the kernel's blocks may be
// scheduled as soon as every block of the kernel before it has called allow_next_kernel(), so its
// launch latency, and whatever it reads before wait_for_prior_kernels() (a GEMV's first weight
// loads), overlap the end of the previous kernel. Stream capture keeps these edges in CUDA graphs.
// Contract for the kernels so launched: device_util.cuh, wait_for_prior_kernels().
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_context.h"

namespace mistral::cuda {

template <typename... Params, typename... Args>
void launch_kernel(const KernelContext& ctx, void (*kernel)(Params...), dim3 grid, dim3 block,
                   size_t shared_bytes, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = ctx.stream();
  cudaLaunchAttribute overlap{};
  overlap.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  overlap.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &overlap;
  config.numAttrs = ctx.overlap_launches() ? 1 : 0;
  MISTRAL_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace mistral::cuda
