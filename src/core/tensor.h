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

// Weight-only quantization of a [N, K] matrix (core/quant.h). `shape` stays the logical [N, K];
// `data` holds the values and `scales` one F16 scale per group of kQuantGroupSize values along K.
//   kInt8: dtype kI8, N * K signed bytes; w = scale * q.
//   kInt4: dtype kU8, N * K / 2 bytes; in each group of 32 values (16 bytes) byte j holds value j
//          in its low nibble and value j + 16 in its high nibble; w = scale * (nibble - 8).
enum class QuantType : uint8_t { kNone, kInt8, kInt4 };
inline constexpr int64_t kQuantGroupSize = 32;

struct Tensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  std::shared_ptr<const void> owner;  // keeps `data` alive; may be null for borrowed views
  QuantType quant = QuantType::kNone;
  const void* scales = nullptr;              // F16 [N, K / kQuantGroupSize] when quantized
  std::shared_ptr<const void> scales_owner;  // keeps `scales` alive
  // Set for weights a device backend placed in its memory (Backend::place_weight): `data` and
  // `scales` must not be read on the host.
  bool on_device = false;

  int64_t dim(size_t i) const { return shape.at(i); }
  uint64_t num_elements() const {
    uint64_t n = 1;
    for (int64_t d : shape) n *= static_cast<uint64_t>(d);
    return n;
  }
  bool quantized() const { return quant != QuantType::kNone; }
  // Bytes of `data` (packed values when quantized).
  uint64_t value_bytes() const {
    if (quant == QuantType::kInt4) return num_elements() / 2;
    return num_elements() * dtype_size(dtype);
  }
  // Bytes of `scales` (0 unless quantized).
  uint64_t scale_bytes() const;
  // Everything a matmul reads: values plus scales.
  uint64_t num_bytes() const { return value_bytes() + scale_bytes(); }
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
// round-to-nearest-even. A quantized tensor is dequantized first.
Tensor convert_tensor(const Tensor& src, DType to);

}  // namespace mistral
