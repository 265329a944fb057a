#include "backend/cpu/quantized_matmul.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_features.h"
#include "backend/cpu/int4_tiles.h"
#include "backend/cpu/quantized_gemm.h"
#include "core/check.h"
#include "core/quant.h"
#include "core/thread_pool.h"

namespace mistral::cpu {
namespace {

constexpr int64_t G = kQuantGroupSize;
// From this many rows of x on, a row-layout matrix goes through the packed-panel GEMM
// (quantized_gemm.h) instead of 4 x 4 tiles.
constexpr int64_t kGemmMinRows = 4;

// The whole 16-row blocks of a QuantLayout::kInt4Tiles16 matrix (int4_tiles.h), m activation
// rows at a time in fours; the rows past them are left to the row-layout kernels.
void int4_tiles_matmul(const QuantizedRows& xq, const Tensor& w, float* y) {
  const int64_t m = xq.rows, n = w.shape[0], k = w.shape[1], groups = k / G;
  const int64_t blocks = n / kInt4TileRows;
  thread_local std::vector<int32_t> offsets;  // the caller's thread writes; workers only read
  offsets.resize(m * groups);
  for (int64_t i = 0; i < m; ++i) {
    int4_tile_offsets(xq.values.data() + i * k, groups, offsets.data() + i * groups);
  }
  const int32_t* xs = offsets.data();
  const bool vnni = cpu_features().avx512_vnni();
  // Block b of the matrix: its values and scales.
  auto values_of = [&](int64_t b) {
    return static_cast<const uint8_t*>(w.data) + b * groups * (kInt4TileRows * G / 2);
  };
  auto scales_of = [&](int64_t b) {
    return static_cast<const F16*>(w.scales) + b * groups * kInt4TileRows;
  };
  auto run = [vnni](const Int4TileArgs& a) {
    if (vnni) {
      int4_tile_block_avx512_vnni(a);
    } else {
      int4_tile_block_portable(a);
    }
  };
  if (m == 1) {  // each thread's share as two sequential streams, its halves, two blocks a pass
    ThreadPool::global().parallel_for(blocks, 1, [&](size_t begin, size_t end) {
      Int4TileArgs a;
      a.groups = groups;
      a.mx = 1;
      a.x[0] = xq.values.data();
      a.dx[0] = xq.scales.data();
      a.xs[0] = xs;
      const int64_t half = static_cast<int64_t>(end - begin) / 2;
      for (int64_t i = 0; i < half; ++i) {
        const int64_t b0 = static_cast<int64_t>(begin) + i, b1 = b0 + half;
        a.values = values_of(b0);
        a.scales = scales_of(b0);
        a.y[0] = y + b0 * kInt4TileRows;
        a.values2 = values_of(b1);
        a.scales2 = scales_of(b1);
        a.y2 = y + b1 * kInt4TileRows;
        run(a);
      }
      if ((end - begin) % 2 != 0) {
        const int64_t b = static_cast<int64_t>(end) - 1;
        a.values = values_of(b);
        a.scales = scales_of(b);
        a.y[0] = y + b * kInt4TileRows;
        a.values2 = nullptr;
        run(a);
      }
    });
    return;
  }
  ThreadPool::global().parallel_for(blocks, 1, [&](size_t begin, size_t end) {
    Int4TileArgs a;
    a.groups = groups;
    float out[4][kInt4TileRows];
    for (size_t b = begin; b < end; ++b) {
      a.values = values_of(b);
      a.scales = scales_of(b);
      for (int64_t i = 0; i < m; i += 4) {
        a.mx = static_cast<int>(std::min<int64_t>(4, m - i));
        for (int r = 0; r < a.mx; ++r) {
          a.x[r] = xq.values.data() + (i + r) * k;
          a.dx[r] = xq.scales.data() + (i + r) * groups;
          a.xs[r] = xs + (i + r) * groups;
          a.y[r] = out[r];
        }
        run(a);
        for (int r = 0; r < a.mx; ++r) {
          std::copy_n(out[r], kInt4TileRows, y + (i + r) * n + b * kInt4TileRows);
        }
      }
    }
  });
}

}  // namespace

__attribute__((target_clones("avx512f", "avx2", "default"))) void quantize_rows(
    const float* x, int64_t m, int64_t k, QuantizedRows* out) {
  out->rows = m;
  out->cols = k;
  out->values.resize(m * k);
  out->scales.resize(m * (k / G));
  for (int64_t i = 0; i < m * (k / G); ++i) {
    const float* xg = x + i * G;
    float amax = 0.0f;
#pragma omp simd reduction(max : amax)
    for (int64_t j = 0; j < G; ++j) amax = std::max(amax, std::fabs(xg[j]));
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    out->scales[i] = amax / 127.0f;
    int8_t* q = out->values.data() + i * G;
#pragma omp simd
    for (int64_t j = 0; j < G; ++j) q[j] = static_cast<int8_t>(std::nearbyint(xg[j] * inv));
  }
}

void arrange_for_int4(const QuantizedRows& x, std::vector<int8_t>* out, int64_t* row_stride) {
  const int64_t groups = x.cols / G;
  const int64_t blocks = (groups + 3) / 4;
  *row_stride = blocks * 4 * G;
  out->assign(x.rows * *row_stride, 0);
  for (int64_t i = 0; i < x.rows; ++i) {
    const int8_t* src = x.values.data() + i * x.cols;
    int8_t* dst = out->data() + i * *row_stride;
    for (int64_t g = 0; g < groups; ++g) {
      int8_t* block = dst + (g / 4) * 4 * G;
      const int64_t j = g % 4;
      std::copy_n(src + g * G, G / 2, block + j * (G / 2));
      std::copy_n(src + g * G + G / 2, G / 2, block + 2 * G + j * (G / 2));
    }
  }
}

void quant_tile_portable(const QuantTile& t, float* out) {
  const int64_t groups = t.k / G;
  for (int i = 0; i < t.mx; ++i) {
    for (int r = 0; r < 4; ++r) {
      float acc = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        int32_t dot = 0;
        for (int64_t j = 0; j < G; ++j)
          dot += t.xq[i][g * G + j] * quantized_level(t.type, t.w[r], g * G + j);
        acc += t.dx[i][g] * f16_to_float(t.dw[r][g]) * static_cast<float>(dot);
      }
      out[i * 4 + r] = acc;
    }
  }
}

void prepare_decode_row(QuantType type, const int8_t* x, const float* dx, int64_t k,
                        DecodeRow* out) {
  const int64_t groups = k / G;
  const int64_t per_step = type == QuantType::kInt4 ? 4 : 2;  // groups
  out->type = type;
  out->groups = groups;
  out->steps = (groups + per_step - 1) / per_step;
  out->values.assign(out->steps * per_step * G, 0);
  for (int64_t g = 0; g < groups;
       ++g) {  // int4: per step, values 0..15 of its 4 groups, then 16..31
    const int64_t j = g % per_step;
    int8_t* step = out->values.data() + (g / per_step) * per_step * G;
    if (type == QuantType::kInt4) {
      std::copy_n(x + g * G, G / 2, step + j * (G / 2));
      std::copy_n(x + g * G + G / 2, G / 2, step + 2 * G + j * (G / 2));
    } else {
      std::copy_n(x + g * G, G, step + j * G);
    }
  }
  const int32_t offset = type == QuantType::kInt4 ? 8 : 128;
  const int64_t bytes_per_lane = per_step * G / 16;
  out->start.assign(out->steps * 16, 0);
  out->scale.assign((groups + 15) / 16 * 16, 0.0f);
  std::copy_n(dx, groups, out->scale.begin());
  for (int64_t s = 0; s < out->steps; ++s) {
    const int8_t* v = out->values.data() + s * per_step * G;
    for (int64_t lane = 0; lane < 16; ++lane) {
      // A lane meets bytes 4 lane .. 4 lane + 3 of each 64-byte half of the step's values.
      int32_t sum = 0;
      for (int64_t half = 0; half < bytes_per_lane / 4; ++half) {
        for (int64_t b = 0; b < 4; ++b) sum += v[half * 64 + 4 * lane + b];
      }
      out->start[s * 16 + lane] = -offset * sum;
    }
  }
}

void quantized_matmul(const float* x, int64_t m, const Tensor& w, float* y) {
  MISTRAL_CHECK(w.quantized() && w.shape.size() == 2)
      << "quantized_matmul needs a quantized matrix";
  const int64_t n = w.shape[0], k = w.shape[1], groups = k / G;
  const int64_t row_bytes = w.quant == QuantType::kInt4 ? k / 2 : k;
  thread_local QuantizedRows xq;  // the caller's thread quantizes; workers only read
  thread_local std::vector<int8_t> arranged;
  quantize_rows(x, m, k, &xq);
  const bool vnni = cpu_features().avx512_vnni();
  const auto* wbytes = static_cast<const uint8_t*>(w.data);
  const auto* wscales = static_cast<const F16*>(w.scales);
  // Rows [0, first_row) are in 16-row tiles; the rest are in row layout, where kRows puts them.
  int64_t first_row = 0;
  if (w.layout == QuantLayout::kInt4Tiles16) {
    int4_tiles_matmul(xq, w, y);
    first_row = n / kInt4TileRows * kInt4TileRows;
    if (first_row == n) return;
  }
  if (vnni && m == 1) {
    thread_local DecodeRow row;  // the caller's thread prepares; workers only read
    prepare_decode_row(w.quant, xq.values.data(), xq.scales.data(), k, &row);
    const DecodeRow& xr = row;
    ThreadPool::global().parallel_for(n - first_row, 64, [&](size_t chunk_begin, size_t chunk_end) {
      const size_t begin = chunk_begin + first_row, end = chunk_end + first_row;
      const int64_t half = static_cast<int64_t>(end - begin) / 2;
      for (int64_t i = 0; i < half; ++i) {  // rows i and half + i of the share
        const int64_t r0 = static_cast<int64_t>(begin) + i, r1 = r0 + half;
        const uint8_t* w2[2] = {wbytes + r0 * row_bytes, wbytes + r1 * row_bytes};
        const F16* dw2[2] = {wscales + r0 * groups, wscales + r1 * groups};
        float out2[2];
        decode_rows_avx512_vnni(xr, 2, w2, dw2, out2);
        y[r0] = out2[0];
        y[r1] = out2[1];
      }
      if ((end - begin) % 2 != 0) {
        const int64_t r = static_cast<int64_t>(end) - 1;
        const uint8_t* w1 = wbytes + r * row_bytes;
        const F16* dw1 = wscales + r * groups;
        decode_rows_avx512_vnni(xr, 1, &w1, &dw1, y + r);
      }
    });
    return;
  }
  if (vnni && m >= kGemmMinRows && w.layout == QuantLayout::kRows) {  // prefill: packed panels
    quantized_gemm_avx512_vnni(xq, w, y);
    return;
  }
  const int8_t* xvalues = xq.values.data();
  int64_t x_stride = k;
  if (vnni && w.quant == QuantType::kInt4) {
    arrange_for_int4(xq, &arranged, &x_stride);
    xvalues = arranged.data();
  }
  const QuantizedRows& xr = xq;
  const int64_t tiles = (n - first_row + 3) / 4;
  ThreadPool::global().parallel_for(tiles, 4, [&](size_t tile_begin, size_t tile_end) {
    QuantTile t;
    t.type = w.quant;
    t.k = k;
    float out[16];
    for (size_t tile = tile_begin; tile < tile_end; ++tile) {
      const int64_t row0 = first_row + static_cast<int64_t>(tile) * 4;
      const int64_t count = std::min<int64_t>(4, n - row0);
      for (int64_t r = 0; r < 4; ++r) {
        const int64_t row = row0 + std::min(r, count - 1);  // pad a short tile by repetition
        t.w[r] = wbytes + row * row_bytes;
        t.dw[r] = wscales + row * groups;
      }
      for (int64_t i = 0; i < m; i += 4) {
        t.mx = static_cast<int>(std::min<int64_t>(4, m - i));
        for (int a = 0; a < t.mx; ++a) {
          t.xq[a] = xvalues + (i + a) * x_stride;
          t.dx[a] = xr.scales.data() + (i + a) * groups;
        }
        if (vnni) {
          quant_tile_avx512_vnni(t, out);
        } else {
          quant_tile_portable(t, out);
        }
        for (int a = 0; a < t.mx; ++a) {
          for (int64_t r = 0; r < count; ++r) y[(i + a) * n + row0 + r] = out[a * 4 + r];
        }
      }
    }
  });
}

}  // namespace mistral::cpu
