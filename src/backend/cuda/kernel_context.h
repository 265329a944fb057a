// KernelContext: what the CUDA kernels of one stream share. Owns a cuBLASLt handle with its
// workspace and algorithm cache, scratch memory for split-K partial sums and dequantized weight
// tiles, and a zeroed array of split-K tile counters; reads the device's properties once. Not
// thread-safe: one context per stream, and the kernels it launches run in that stream's order (so
// consecutive kernels may reuse the scratch).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "backend/cuda/device_buffer.h"
#include "core/status.h"

namespace mistral::cuda {

class KernelContext {
 public:
  // Binds to the current device. `stream` is borrowed and must outlive the context (nullptr: the
  // legacy default stream). Allocates the cuBLASLt workspace and `scratch_bytes` of scratch.
  static Result<std::unique_ptr<KernelContext>> create(cudaStream_t stream,
                                                       size_t scratch_bytes = size_t{16} << 20);
  ~KernelContext();
  KernelContext(const KernelContext&) = delete;
  KernelContext& operator=(const KernelContext&) = delete;

  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }
  int num_sms() const { return props_.multiProcessorCount; }
  const cudaDeviceProp& props() const { return props_; }
  // Whether launch_kernel starts kernels as programmatic dependent launches (sm_90 and later,
  // unless the environment sets MISTRAL_CUDA_PDL=0).
  bool overlap_launches() const { return overlap_launches_; }

  // Grows the scratch to at least `bytes` (never shrinks); an error names the bytes and the free
  // memory, and leaves the scratch empty (the old block is freed first, so the two need not fit
  // together) until a later call succeeds. Waits for the stream first, since queued kernels may
  // still use the old scratch.
  Status reserve_scratch(size_t bytes);
  void* scratch() const { return scratch_.data(); }
  size_t scratch_bytes() const { return scratch_.bytes(); }

  // kMaxCounters zeroed words; a kernel that takes them leaves them zero when it completes.
  static constexpr size_t kMaxCounters = size_t{1} << 16;
  unsigned* counters() const { return counters_.as<unsigned>(); }

  cublasLtHandle_t cublas_lt() const { return lt_; }
  void* cublas_workspace() const { return lt_workspace_.data(); }
  size_t cublas_workspace_bytes() const { return lt_workspace_.bytes(); }

  // The cuBLASLt algorithm found for a bf16 GEMM of this shape, output type and operand
  // alignment (cached).
  struct GemmKey {
    int64_t m, n, k;
    int out_type;  // a cudaDataType_t
    uint32_t align_a, align_b, align_d;
    bool operator<(const GemmKey& o) const {
      return std::tie(m, n, k, out_type, align_a, align_b, align_d) <
             std::tie(o.m, o.n, o.k, o.out_type, o.align_a, o.align_b, o.align_d);
    }
  };
  std::map<GemmKey, cublasLtMatmulAlgo_t>& gemm_algos() { return gemm_algos_; }

 private:
  KernelContext() = default;

  cudaStream_t stream_ = nullptr;
  int device_ = 0;
  cudaDeviceProp props_{};
  bool overlap_launches_ = false;
  cublasLtHandle_t lt_ = nullptr;
  DeviceBuffer lt_workspace_;
  DeviceBuffer scratch_;
  DeviceBuffer counters_;
  std::map<GemmKey, cublasLtMatmulAlgo_t> gemm_algos_;
};

}  // namespace mistral::cuda
