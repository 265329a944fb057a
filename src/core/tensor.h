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

// Where the bytes of a quantized matrix are. Both layouts hold the same bytes (the values and
// scales of each group, unchanged), only their order differs.
//   kRows: as QuantType describes, row after row (checkpoints and every backend's input).
//   kInt4Tiles16 (int4 only; made by the CPU backend's place_weight, read by its kernels and by
//     dequantize_row): the rows in blocks of kInt4TileRows, the N % 16 last rows left as in kRows.
//     In block b, group g, the 256 value bytes are 4 vectors of 64 bytes: vector c holds, for
//     rows r = 0..15 of the block in turn, bytes 4c..4c+3 of row 16b + r's group g (values 4c..4c+3
//     in the low nibbles, 4c+16..4c+19 in the high ones). The 16 scales of the block's rows for
//     group g follow one another. Offsets: values ((b * groups + g) * 4 + c) * 64 + 4r, scales
//     (b * groups + g) * 16 + r; a row past the last whole block sits where kRows puts it.
enum class QuantLayout : uint8_t { kRows, kInt4Tiles16 };
inline constexpr int64_t kInt4TileRows = 16;

struct Tensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  std::shared_ptr<const void> owner;  // keeps `data` alive; may be null for borrowed views
  QuantType quant = QuantType::kNone;
  QuantLayout layout = QuantLayout::kRows;   // when quantized
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
