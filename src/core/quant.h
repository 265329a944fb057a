// Weight-only quantization of [N, K] matrices in groups of kQuantGroupSize (32) consecutive values
// along K, one F16 scale per group (the layouts are described at QuantType in core/tensor.h).
//   int8: scale = max|w| / 127, q = round(w / scale): the rounding error is at most scale / 2.
//   int4: symmetric, 16 levels -8..7. The scale is chosen per group among candidates around
//         max|w| / 8 (both signs) to minimize the group's squared error, then refit by least
//         squares for the chosen levels; never worse than llama.cpp's Q4_0 rule (which is one of
//         the candidates).
// Scales are rounded to F16 before the values are rounded, so the stored pair reproduces exactly
// what quantization measured.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "core/half.h"
#include "core/status.h"
#include "core/tensor.h"

namespace mistral {

// "int8" / "int4" (and "none").
std::optional<QuantType> parse_quant_type(std::string_view name);
std::string_view quant_type_name(QuantType type);

// Quantizes a dense F32/BF16/F16 [N, K] matrix; K must be a multiple of kQuantGroupSize. Fails
// on non-finite values or a scale beyond F16's range. Runs on the global thread pool.
Result<Tensor> quantize_matrix(const Tensor& dense, QuantType type);

// The signed level of value j of one row of quantized values (the value is its group's scale times
// this): the one place that reads the int8 / packed int4 layout value by value.
inline int quantized_level(QuantType type, const uint8_t* row, int64_t j) {
  if (type == QuantType::kInt8) return static_cast<int8_t>(row[j]);
  const int64_t g = j / kQuantGroupSize, i = j % kQuantGroupSize, half = kQuantGroupSize / 2;
  const uint8_t b = row[g * half + i % half];
  return (i < half ? (b & 0x0f) : (b >> 4)) - 8;
}

// QuantLayout::kInt4Tiles16 (core/tensor.h) of an [n, k] int4 matrix: where byte `byte` (0 ..
// k / 2 - 1) of row `row`'s packed values is in `data`, and where its group g's scale is in
// `scales`.
inline int64_t int4_tile_value_offset(int64_t n, int64_t k, int64_t row, int64_t byte) {
  if (row >= n / kInt4TileRows * kInt4TileRows) return row * (k / 2) + byte;
  const int64_t b = row / kInt4TileRows, r = row % kInt4TileRows, g = byte / 16, j = byte % 16;
  return ((b * (k / kQuantGroupSize) + g) * 4 + j / 4) * 64 + 4 * r + j % 4;
}
inline int64_t int4_tile_scale_index(int64_t n, int64_t k, int64_t row, int64_t g) {
  const int64_t groups = k / kQuantGroupSize;
  if (row >= n / kInt4TileRows * kInt4TileRows) return row * groups + g;
  return (row / kInt4TileRows * groups + g) * kInt4TileRows + row % kInt4TileRows;
}
// Copies a host int4 matrix in QuantLayout::kRows into the kInt4Tiles16 layout, at `values`
// (value_bytes()) and `scales` (scale_bytes()). Runs on the global thread pool.
void pack_int4_tiles(const Tensor& w, uint8_t* values, F16* scales);
// The same into buffers the result owns.
Tensor pack_int4_tiles(const Tensor& w);
// A kRows copy of a kInt4Tiles16 matrix (e.g. to save it), in buffers the result owns.
Tensor unpack_int4_tiles(const Tensor& w);

// Row n of a quantized matrix as floats (out has K entries), in either layout.
void dequantize_row(const Tensor& q, int64_t row, float* out);
// The whole matrix as a new F32 tensor.
Tensor dequantize_matrix(const Tensor& q);

// A quantized tensor viewing `values` and `scales` (e.g. memory-mapped from a checkpoint). The
// caller has checked their sizes with quantized_value_shape / quantized_scale_shape.
Tensor make_quantized_view(QuantType type, std::vector<int64_t> shape, const void* values,
                           const void* scales, std::shared_ptr<const void> owner);
// On-disk shapes of the two parts of a quantized [N, K] matrix: values I8 [N, K] or U8 [N, K/2];
// scales F16 [N, K/32].
std::vector<int64_t> quantized_value_shape(QuantType type, const std::vector<int64_t>& shape);
std::vector<int64_t> quantized_scale_shape(const std::vector<int64_t>& shape);
DType quantized_value_dtype(QuantType type);

// Quantizes one group of 32 values (exposed for tests and kernels). Writes 32 int8 values, or 16
// packed bytes for int4, and returns the F16 scale.
F16 quantize_group_int8(const float* w, int8_t* q);
F16 quantize_group_int4(const float* w, uint8_t* packed);

}  // namespace mistral
