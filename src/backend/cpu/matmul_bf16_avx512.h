// The AVX-512 BF16 tile kernel of matmul.cc for BF16 weights (decode and prefill). Activations come
// already rounded to bf16 (round_rows_to_bf16), so one vdpbf16ps multiplies 32 activation values
// with 32 weights and adds the products pairwise into 16 float32 lanes: the products of two bf16
// values are exact in float32, and the sums are float32, as in the portable kernel (in another
// order). Like every vdpbf16ps, bf16 subnormals are read as zero.
#pragma once

#include <cstdint>

namespace mistral::cpu {

// Prefill tiles: up to kBf16TileActivations activation rows x kBf16TileRows weight rows, 24
// accumulators; 10 loads feed 24 vdpbf16ps, so the tile runs at ~75% of the machine's vdpbf16ps
// rate (Zen 4, 2 threads: 345-360 of 460 GFLOP/s; 4x4 and 6x4 tiles 300-345, 3x8 275-285).
inline constexpr int kBf16TileRows = 6;
inline constexpr int kBf16TileActivations = 4;

// out[a * kBf16TileRows + r] = dot(x row a, w[r]) for a < mx (1..kBf16TileActivations) activation
// rows of k bf16 values each, x_stride apart and zero-padded to a multiple of 32 values, and
// kBf16TileRows weight rows of k bf16 values (read only up to k). Needs
// cpu_features().avx512_bf16().
void bf16_tile_avx512bf16(const uint16_t* x, int64_t x_stride, int mx, const uint16_t* const* w,
                          int64_t k, float* out);
// Decode: out[r] = dot(x, w[r]) for `rows` (1 or 2) weight rows of k values; x as above. Each row
// is read front to back with two accumulators, and the rows share the activation loads. Few
// sequential streams per core read faster than many side by side: on the Zen 4 VM, two far
// streams per thread read 1 x 57344 x 4096 at 24-32 GB/s on one thread against 21-23 for tiles
// of 8 rows, and on two threads at 55-60 against 45 when the host had bandwidth to spare (equal
// within 5% when it had less; bench/tools/bf16_decode_pattern.cc, bench/RESULTS.md).
void bf16_gemv_rows_avx512bf16(const uint16_t* x, int rows, const uint16_t* const* w, int64_t k,
                               float* out);

}  // namespace mistral::cpu
