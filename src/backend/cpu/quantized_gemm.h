// Prefill GEMM with int8/int4 weights on AVX-512 VNNI: y[m, n] = x[m, k] * W^T for a quantized
// W [n, k] in row layout (QuantLayout::kRows; QuantType in core/tensor.h) and x quantized per row
// and group of 32 (QuantizedRows: int8 values, float scales dx), for m >= a few rows.
//
// Output columns go in lanes (an outer product), not k: W is cut into panels of 32 rows, and the
// thread that takes a panel first packs it into a buffer of its own (the panel is read from the
// weights once and reused by every row of x):
//   bytes  [k / 4][32][4]: for every 4 consecutive k, the 4 weight levels of each of the 32 rows,
//          as unsigned bytes (int8: level + 128, int4: the nibble, level + 8), so one 64-byte load
//          feeds one vpdpbusd for 16 columns;
//   scales [groups][32]: the rows' F16 scales as float.
// A micro-kernel then takes up to 6 rows of x against the panel: per group of 32, 8 vpdpbusd per
// (row, 16 columns) with the row's 4 activation bytes broadcast, each int32 sum starting at
// -offset * (the sum of the row's 32 activations of the group), so it is the exact integer group
// sum; then y += float(sum) * (dw * dx) with one fused multiply-add, group after group. Same
// integer sums as quant_tile_portable; only the float accumulation may round differently (fma).
#pragma once

#include <cstdint>

#include "backend/cpu/quantized_matmul.h"
#include "core/tensor.h"

namespace mistral::cpu {

// y[m, n] (row-major). Needs cpu_features().avx512_vnni(); x.cols == w.shape[1]. Runs on the
// global thread pool.
void quantized_gemm_avx512_vnni(const QuantizedRows& x, const Tensor& w, float* y);

}  // namespace mistral::cpu
