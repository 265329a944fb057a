#include "backend/cuda/device_buffer.h"

#include <cstdio>
#include <utility>

#include "backend/cuda/cuda_check.h"

namespace mistral::cuda {

std::string format_bytes(size_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 5) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.2f %s", v, units[u]);
  return buf;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) MISTRAL_CUDA_CHECK(cudaFree(data_));
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) MISTRAL_CUDA_CHECK(cudaFree(data_));
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

Result<DeviceBuffer> DeviceBuffer::allocate(size_t bytes, const std::string& what) {
  DeviceBuffer buffer;
  if (bytes == 0) return buffer;
  const cudaError_t err = cudaMalloc(&buffer.data_, bytes);
  if (err == cudaSuccess) {
    buffer.bytes_ = bytes;
    return buffer;
  }
  buffer.data_ = nullptr;
  (void)cudaGetLastError();  // an out-of-memory error is not sticky; clear it for later checks
  int device = -1;
  MISTRAL_CUDA_CHECK(cudaGetDevice(&device));
  size_t free_bytes = 0, total_bytes = 0;
  MISTRAL_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return error("cudaMalloc of " + std::to_string(bytes) + " bytes (" + format_bytes(bytes) +
               ") for " + what + " failed: " + cudaGetErrorString(err) + "; CUDA device " +
               std::to_string(device) + " has " + std::to_string(free_bytes) + " bytes (" +
               format_bytes(free_bytes) + ") free of " + format_bytes(total_bytes));
}

}  // namespace mistral::cuda
