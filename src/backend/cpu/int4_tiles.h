// Int4 weights in the CPU backend's tile layout (QuantLayout::kInt4Tiles16, core/tensor.h): 16
// rows interleaved four bytes at a time, so that int32 lane r of every 64-byte vector belongs to
// row r of the block. One vpdpbusd then multiplies 64 weight bytes (16 rows x 4 nibbles) by 4
// activation values broadcast to every lane, a group's dot products of 16 rows end in one vector
// (no per-lane scale shuffles, no horizontal sums), and the high nibbles need one AND (v & 0xf0 is
// 16 x the nibble; the sum is shifted right by 4 once per group) instead of a shift and an AND.
// Results: the same integer group sums as every other int4 kernel; float sums over the groups in
// group order, one accumulator per row (quantized_matmul.h's contract).
// place_weight makes these copies once at load; the functions here are thread-safe.
#pragma once

#include <cstdint>

#include "core/half.h"
#include "core/tensor.h"

namespace mistral::cpu {

// One 16-row block against up to 4 activation rows (m rows of the matmul at a time).
struct Int4TileArgs {
  int64_t groups = 0;         // k / 32
  int mx = 0;                 // activation rows, 1..4
  const int8_t* x[4] = {};    // activation values (quantize_rows), k each, in their own order
  const float* dx[4] = {};    // their scales, groups each
  const int32_t* xs[4] = {};  // per group, -8 times the sum of its values (the nibbles' offset)
  const uint8_t* values = nullptr;  // the block's groups * 256 value bytes
  const F16* scales = nullptr;      // the block's groups * 16 scales
  float* y[4] = {};                 // 16 outputs per activation row (rows 16b .. 16b + 15)
  // Decode (mx == 1) may add a second block, computed in the same pass: a thread then reads two
  // sequential streams that share the activation loads, 6-12% faster than one block at a time
  // on one Zen 4 core, in L2 or from DRAM.
  const uint8_t* values2 = nullptr;
  const F16* scales2 = nullptr;
  float* y2 = nullptr;
};

// The per-group offsets that Int4TileArgs::xs holds: xs[g] = -8 * sum of x[32g .. 32g + 31].
void int4_tile_offsets(const int8_t* x, int64_t groups, int32_t* xs);

void int4_tile_block_portable(const Int4TileArgs& a);
// Needs cpu_features().avx512_vnni().
void int4_tile_block_avx512_vnni(const Int4TileArgs& a);

}  // namespace mistral::cpu
