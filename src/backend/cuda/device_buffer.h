// DeviceBuffer: one cudaMalloc'd block of device memory, freed on destruction. Move-only. The
// allocation is the one place a user can make the GPU run out of memory (a model too large, a
// context too long), so it returns a Status that names the bytes asked for and the memory free.
#pragma once

#include <cstddef>
#include <string>

#include "core/status.h"

namespace mistral::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // `bytes` on the current device (0 gives an empty buffer). `what` names the use in the error,
  // e.g. "layer 3 wq". The memory is uninitialized.
  static Result<DeviceBuffer> allocate(size_t bytes, const std::string& what);

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// "1.50 GiB"-style rendering used in memory messages.
std::string format_bytes(size_t bytes);

}  // namespace mistral::cuda
