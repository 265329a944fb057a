// Status checks for every CUDA runtime and cuBLASLt call. A failing call is a broken invariant
// (the device faulted, a launch was misconfigured), so it aborts with file, line, the call and the
// library's own message; errors a user can cause (too little memory) go through
// DeviceBuffer::allocate, which returns a Status instead.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "core/check.h"

#define MISTRAL_CUDA_CHECK(expr)                                                        \
  do {                                                                                  \
    const cudaError_t _err = (expr);                                                    \
    MISTRAL_CHECK(_err == cudaSuccess)                                                  \
        << #expr << ": " << cudaGetErrorName(_err) << ": " << cudaGetErrorString(_err); \
  } while (0)

#define MISTRAL_CUBLAS_CHECK(expr)                                                               \
  do {                                                                                           \
    const cublasStatus_t _st = (expr);                                                           \
    MISTRAL_CHECK(_st == CUBLAS_STATUS_SUCCESS)                                                  \
        << #expr << ": cuBLAS status " << int(_st) << " (" << cublasLtGetStatusName(_st) << ": " \
        << cublasLtGetStatusString(_st) << ")";                                                  \
  } while (0)

// After a <<<...>>> launch: catches bad launch configurations at once (execution errors surface at
// the next synchronizing call, which is checked too).
#define MISTRAL_CUDA_CHECK_LAUNCH() MISTRAL_CUDA_CHECK(cudaGetLastError())
