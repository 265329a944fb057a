#include "backend/cpu/int4_tiles.h"

namespace mistral::cpu {

constexpr int64_t G = kQuantGroupSize;

void int4_tile_offsets(const int8_t* x, int64_t groups, int32_t* xs) {
  for (int64_t g = 0; g < groups; ++g) {
    int32_t sum = 0;
    for (int64_t j = 0; j < G; ++j) sum += x[g * G + j];
    xs[g] = -8 * sum;
  }
}

void int4_tile_block_portable(const Int4TileArgs& a) {
  if (a.values2 != nullptr) {
    Int4TileArgs second = a;
    second.values = a.values2;
    second.scales = a.scales2;
    second.y[0] = a.y2;
    second.values2 = nullptr;
    int4_tile_block_portable(second);
  }
  for (int i = 0; i < a.mx; ++i) {
    for (int64_t r = 0; r < kInt4TileRows; ++r) {
      float acc = 0.0f;
      for (int64_t g = 0; g < a.groups; ++g) {
        const uint8_t* tile = a.values + g * 16 * kInt4TileRows;
        const int8_t* x = a.x[i] + g * G;
        int32_t dot = a.xs[i][g];
        for (int64_t c = 0; c < 4; ++c) {
          for (int64_t b = 0; b < 4; ++b) {
            const uint8_t byte = tile[c * 64 + 4 * r + b];
            dot += (byte & 0x0f) * x[4 * c + b] + (byte >> 4) * x[G / 2 + 4 * c + b];
          }
        }
        acc += a.dx[i][g] * f16_to_float(a.scales[g * kInt4TileRows + r]) * static_cast<float>(dot);
      }
      a.y[i][r] = acc;
    }
  }
}

}  // namespace mistral::cpu
