// The CUDA backend: backend.h's op set on one GPU through the kernel library (kernels.h). Weights
// are uploaded once by place_weight (matrices as bf16, int8 or int4 in the CPU's quantized
// layout; norms and the embedding table as bf16); activations are bf16 and, like the KV cache
// (bf16 only), stay in device memory. Ops are queued on the backend's own stream; to_host waits.
#pragma once

#include <memory>

#include "backend/backend.h"
#include "core/status.h"

namespace mistral::cuda {

// Binds to GPU `device`; an error names the device asked for and how many there are.
Result<std::unique_ptr<Backend>> make_cuda_backend(int device);

}  // namespace mistral::cuda
