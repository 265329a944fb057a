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

// launch_kernel_in_clusters: the same, with the grid cut into thread block clusters of
// `cluster_blocks` consecutive blocks along x (sm_90 and later; gridDim.x a multiple of it; more
// than 8 needs the kernel's cudaFuncAttributeNonPortableClusterSizeAllowed). 1: no clusters.
template <typename... Params, typename... Args>
void launch_kernel_in_clusters(const KernelContext& ctx, unsigned cluster_blocks,
                               void (*kernel)(Params...), dim3 grid, dim3 block,
                               size_t shared_bytes, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = ctx.stream();
  cudaLaunchAttribute attrs[2]{};
  unsigned count = 0;
  if (ctx.overlap_launches()) {
    attrs[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[count].val.programmaticStreamSerializationAllowed = 1;
    ++count;
  }
  if (cluster_blocks > 1) {
    attrs[count].id = cudaLaunchAttributeClusterDimension;
    attrs[count].val.clusterDim.x = cluster_blocks;
    attrs[count].val.clusterDim.y = 1;
    attrs[count].val.clusterDim.z = 1;
    ++count;
  }
  config.attrs = attrs;
  config.numAttrs = count;
  MISTRAL_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

template <typename... Params, typename... Args>
void launch_kernel(const KernelContext& ctx, void (*kernel)(Params...), dim3 grid, dim3 block,
                   size_t shared_bytes, Args&&... args) {
  launch_kernel_in_clusters(ctx, 1, kernel, grid, block, shared_bytes, std::forward<Args>(args)...);
}

}  // namespace mistral::cuda
