// Tensor: a typed, shaped view of contiguous row-major memory, optionally keeping its owner alive
// (a memory-mapped file, or a buffer the tensor owns). Copying a Tensor copies the view, not the
// data. Immutable data is shared freely between threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace mistral {

struct Tensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  std::shared_ptr<const void> owner;  // keeps `data` alive; may be null for borrowed views

  int64_t dim(size_t i) const { return shape.at(i); }
  uint64_t num_elements() const {
    uint64_t n = 1;
    for (int64_t d : shape) n *= static_cast<uint64_t>(d);
    return n;
  }
  uint64_t num_bytes() const { return num_elements() * dtype_size(dtype); }
  bool empty() const { return data == nullptr; }
  template <typename T>
  const T* as() const {
    return static_cast<const T*>(data);
  }

  // A tensor that owns a fresh zeroed buffer of the given type and shape.
  static Tensor allocate(DType dtype, std::vector<int64_t> shape);
  // Mutable access to a buffer created by allocate().
  void* mutable_data() const { return const_cast<void*>(data); }
};

std::string shape_to_string(const std::vector<int64_t>& shape);

// Element i of a F32/BF16/F16 buffer as float, and the reverse (round-to-nearest-even).
float load_float(const void* data, DType dtype, size_t i);
void store_float(void* data, DType dtype, size_t i, float v);

// Converts any float tensor (F32, BF16, F16) to a new F32 tensor, or to BF16/F16 with
// round-to-nearest-even.
Tensor convert_tensor(const Tensor& src, DType to);

}  // namespace mistral
