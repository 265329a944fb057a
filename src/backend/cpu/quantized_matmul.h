// Matrix product with int8/int4 weight-only quantized weights (layout: QuantType in
// core/tensor.h). Activations are quantized per row to int8 in the same groups of 32 as the
// weights (scale = max|x| / 127, as llama.cpp's Q8_0 activations), so every group's dot product is
// exact integer arithmetic:
//   y[i, n] = sum over groups g of  dx[i, g] * dw[n, g] * sum_j xq[i, g, j] * wq[n, g, j].
// A tile kernel computes up to 4 activation rows against 4 weight rows; the AVX-512 VNNI one
// (vpdpbusd) and the portable one give the same integer group sums and differ only in the order of
// the float accumulation across groups. Int4 matrices in the CPU backend's tiles
// (QuantLayout::kInt4Tiles16) go to the kernels of int4_tiles.h, under the same contract; their
// rows past the last 16-row block, in row layout, to the kernels here.
#pragma once

#include <cstdint>
#include <vector>

#include "core/half.h"
#include "core/tensor.h"

namespace mistral::cpu {

struct QuantizedRows {
  int64_t rows = 0, cols = 0;
  std::vector<int8_t> values;  // [rows, cols]
  std::vector<float> scales;   // [rows, cols / 32]
};

// Quantizes x[m, k] (k a multiple of 32) to int8 per group of 32.
void quantize_rows(const float* x, int64_t m, int64_t k, QuantizedRows* out);

// The activation values in the order the AVX-512 int4 kernel reads them: per block of 4 groups
// (128 values, zero-padded at the end of a row), values 0..15 of the 4 groups, then values 16..31.
// out has rows * row_stride values, row_stride = 128 * ceil(groups / 4).
void arrange_for_int4(const QuantizedRows& x, std::vector<int8_t>* out, int64_t* row_stride);

// Inputs of one tile: `mx` (1..4) activation rows against 4 weight rows of a quantized matrix.
struct QuantTile {
  QuantType type = QuantType::kInt8;
  int64_t k = 0;
  int mx = 0;
  const int8_t* xq[4] = {};  // activation values, k each (arrange_for_int4 order for the
                             // AVX-512 kernel with int4 weights)
  const float* dx[4] = {};   // activation scales, k / 32 each
  const uint8_t* w[4] = {};  // weight rows (k bytes for int8, k / 2 for int4)
  const F16* dw[4] = {};     // weight scales, k / 32 each
};

// out[i * 4 + r] = dot(activation row i, weight row r).
void quant_tile_portable(const QuantTile& t, float* out);
// Needs cpu_features().avx512_vnni().
void quant_tile_avx512_vnni(const QuantTile& t, float* out);

// Decode (one activation row): each thread reads its weight rows as two sequential streams (the
// two halves of its share), two rows at a time. The tile kernel's 4 rows read side by side are
// short interleaved streams that the prefetchers serve slowly: 4 int4 rows of 2 KiB stream at
// ~13 GB/s on one Zen 4 core, rows one after another at ~23-30 GB/s (bench/tools/stream_pattern).
// The activation row is prepared once per call, per step of 64 weight bytes (int8: 2 groups,
// int4: 4 groups; zero-padded at the end of the row): its values in the order the step reads them
// (int8: as they are, int4: arrange_for_int4), and per int32 lane the start of the lane's sum
// (-offset times the sum of the activations it meets: the weights' offset, 128 or 8, removed);
// and the scales dx of its groups, zero-padded to whole blocks of 16 groups (the kernel multiplies
// them with a row's 16 weight scales once per block).
struct DecodeRow {
  QuantType type = QuantType::kInt8;
  int64_t groups = 0;          // k / 32
  int64_t steps = 0;           // ceil(groups / 2) (int8) or ceil(groups / 4) (int4)
  std::vector<int8_t> values;  // steps * 64 (int8) or steps * 128 (int4)
  std::vector<int32_t> start;  // steps * 16
  std::vector<float> scale;    // 16 * ceil(groups / 16)
};
// x: k int8 values (quantize_rows) and their k / 32 scales.
void prepare_decode_row(QuantType type, const int8_t* x, const float* dx, int64_t k,
                        DecodeRow* out);
// out[r] = dot(x, w row r) for `rows` (1 or 2) weight rows w[r] of x.type with their k / 32
// scales dw[r]; the rows share the activation loads. Needs cpu_features().avx512_vnni().
void decode_rows_avx512_vnni(const DecodeRow& x, int rows, const uint8_t* const* w,
                             const F16* const* dw, float* out);

// y[m, N] = x[m, K] * w^T for a quantized w in either layout.
void quantized_matmul(const float* x, int64_t m, const Tensor& w, float* y);

}  // namespace mistral::cpu
