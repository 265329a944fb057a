#include "core/quant.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/check.h"
#include "core/thread_pool.h"

namespace mistral {
namespace {

constexpr int64_t G = kQuantGroupSize;

#define MISTRAL_INLINE inline __attribute__((always_inline))

// Round to nearest, ties to even, for |x| <= 2^22, in a form compilers vectorize (adding and
// subtracting 1.5 * 2^23 leaves the integer part under the default rounding mode).
MISTRAL_INLINE float round_even(float x) {
  constexpr float kMagic = 12582912.0f;
  return (x + kMagic) - kMagic;
}

// Squared error of the group under scale d with levels clamped to [lo, hi]; fills q if given.
MISTRAL_INLINE float group_error(const float* w, float d, float lo, float hi, float* q) {
  const float inv = d != 0.0f ? 1.0f / d : 0.0f;
  float err = 0.0f;
#pragma omp simd reduction(+ : err)
  for (int64_t i = 0; i < G; ++i) {
    const float level = round_even(std::clamp(w[i] * inv, lo, hi));
    const float diff = w[i] - d * level;
    err += diff * diff;
    if (q) q[i] = level;
  }
  return err;
}

// The F16 scale for a float one, and its float value (what the kernels will use).
MISTRAL_INLINE F16 scale_to_f16(float d, float* rounded) {
  const F16 h = float_to_f16(d);
  *rounded = f16_to_float(h);
  return h;
}

MISTRAL_INLINE F16 group_int8(const float* w, int8_t* q) {
  float amax = 0.0f;
  for (int64_t i = 0; i < G; ++i) amax = std::max(amax, std::fabs(w[i]));
  float d = 0.0f;
  const F16 h = scale_to_f16(amax / 127.0f, &d);
  float levels[G];
  group_error(w, d, -127.0f, 127.0f, levels);
  for (int64_t i = 0; i < G; ++i) q[i] = static_cast<int8_t>(levels[i]);
  return h;
}

MISTRAL_INLINE F16 group_int4(const float* w, uint8_t* packed) {
  float m = 0.0f;  // the value of largest magnitude, with its sign
  for (int64_t i = 0; i < G; ++i) {
    if (std::fabs(w[i]) > std::fabs(m)) m = w[i];
  }
  float best_d = 0.0f, best_err = INFINITY;
  F16 best_h{0};
  auto consider = [&](float d_wanted) {
    float d = 0.0f;
    const F16 h = scale_to_f16(d_wanted, &d);
    const float err = group_error(w, d, -8.0f, 7.0f, nullptr);
    if (err < best_err) {
      best_err = err;
      best_d = d;
      best_h = h;
    }
  };
  if (m != 0.0f) {
    // m on level -8 (llama.cpp's Q4_0 rule) or +7, and slightly larger scales, which trade
    // clipping the extreme value for finer steps everywhere else.
    for (float t = 9.0f; t >= 6.0f; t -= 0.5f) {
      consider(-m / t);
      consider(m / (t - 1.0f));
    }
    // Least-squares refits of the scale for the chosen levels.
    for (int iteration = 0; iteration < 3; ++iteration) {
      float levels[G];
      group_error(w, best_d, -8.0f, 7.0f, levels);
      float wq = 0.0f, qq = 0.0f;
      for (int64_t i = 0; i < G; ++i) {
        wq += w[i] * levels[i];
        qq += levels[i] * levels[i];
      }
      if (qq > 0.0f) consider(wq / qq);
    }
  }
  float levels[G];
  group_error(w, best_d, -8.0f, 7.0f, levels);
  for (int64_t j = 0; j < G / 2; ++j) {
    const int lo = static_cast<int>(levels[j]) + 8;
    const int hi = static_cast<int>(levels[j + G / 2]) + 8;
    packed[j] = static_cast<uint8_t>(lo | (hi << 4));
  }
  return best_h;
}

// One row of k values: every group's values and scale; compiled for several instruction sets.
__attribute__((target_clones("avx512f", "avx2", "default"))) void quantize_row(
    const float* row, int64_t k, QuantType type, uint8_t* values, F16* scales) {
  for (int64_t g = 0; g < k / G; ++g) {
    scales[g] = type == QuantType::kInt8
                    ? group_int8(row + g * G, reinterpret_cast<int8_t*>(values) + g * G)
                    : group_int4(row + g * G, values + g * (G / 2));
  }
}

}  // namespace

std::optional<QuantType> parse_quant_type(std::string_view name) {
  if (name == "int8") return QuantType::kInt8;
  if (name == "int4") return QuantType::kInt4;
  if (name == "none") return QuantType::kNone;
  return std::nullopt;
}

std::string_view quant_type_name(QuantType type) {
  switch (type) {
    case QuantType::kInt8:
      return "int8";
    case QuantType::kInt4:
      return "int4";
    case QuantType::kNone:
      break;
  }
  return "none";
}

F16 quantize_group_int8(const float* w, int8_t* q) { return group_int8(w, q); }
F16 quantize_group_int4(const float* w, uint8_t* packed) { return group_int4(w, packed); }

std::vector<int64_t> quantized_value_shape(QuantType type, const std::vector<int64_t>& shape) {
  if (type == QuantType::kInt4) return {shape[0], shape[1] / 2};
  return shape;
}

std::vector<int64_t> quantized_scale_shape(const std::vector<int64_t>& shape) {
  return {shape[0], shape[1] / G};
}

DType quantized_value_dtype(QuantType type) {
  return type == QuantType::kInt4 ? DType::kU8 : DType::kI8;
}

Tensor make_quantized_view(QuantType type, std::vector<int64_t> shape, const void* values,
                           const void* scales, std::shared_ptr<const void> owner) {
  Tensor t;
  t.quant = type;
  t.dtype = quantized_value_dtype(type);
  t.shape = std::move(shape);
  t.data = values;
  t.scales = scales;
  t.owner = owner;
  t.scales_owner = std::move(owner);
  return t;
}

Result<Tensor> quantize_matrix(const Tensor& dense, QuantType type) {
  MISTRAL_CHECK(type != QuantType::kNone && !dense.quantized() && dense.shape.size() == 2);
  const int64_t n = dense.shape[0], k = dense.shape[1];
  if (k % G != 0) {
    return error("cannot quantize a matrix of shape " + shape_to_string(dense.shape) +
                 ": the row length is not a multiple of " + std::to_string(G));
  }
  Tensor values =
      Tensor::allocate(quantized_value_dtype(type), quantized_value_shape(type, {n, k}));
  Tensor scales = Tensor::allocate(DType::kF16, quantized_scale_shape({n, k}));
  auto* vbytes = static_cast<uint8_t*>(values.mutable_data());
  auto* s = static_cast<F16*>(scales.mutable_data());
  const int64_t groups = k / G;
  const int64_t group_bytes = type == QuantType::kInt4 ? G / 2 : G;
  std::atomic<int64_t> bad_row{-1};
  ThreadPool::global().parallel_for(n, 16, [&](size_t begin, size_t end) {
    std::vector<float> row(k);
    for (size_t r = begin; r < end; ++r) {
      for (int64_t i = 0; i < k; ++i) row[i] = load_float(dense.data, dense.dtype, r * k + i);
      for (int64_t i = 0; i < k; ++i) {
        if (!std::isfinite(row[i])) bad_row = r;
      }
      F16* row_scales = s + r * groups;
      quantize_row(row.data(), k, type, vbytes + r * groups * group_bytes, row_scales);
      for (int64_t g = 0; g < groups; ++g) {
        if (!std::isfinite(f16_to_float(row_scales[g]))) bad_row = r;
      }
    }
  });
  if (bad_row >= 0) {
    return error("cannot quantize row " + std::to_string(bad_row.load()) +
                 ": it holds a non-finite value or one beyond the F16 scale range");
  }
  Tensor q = make_quantized_view(type, {n, k}, values.data, scales.data, values.owner);
  q.scales_owner = scales.owner;
  return q;
}

namespace {

// Moves every 4-byte run of values and every scale between the two layouts of an int4 matrix
// (int4_tile_value_offset and int4_tile_scale_index, unrolled).
void copy_int4_layout(const Tensor& w, QuantLayout to, uint8_t* values, F16* scales) {
  const int64_t n = w.shape[0], k = w.shape[1], groups = k / G, row_bytes = k / 2;
  const int64_t blocks = n / kInt4TileRows, tiled_rows = blocks * kInt4TileRows;
  const auto* src = static_cast<const uint8_t*>(w.data);
  const auto* src_scales = static_cast<const F16*>(w.scales);
  const bool pack = to == QuantLayout::kInt4Tiles16;
  ThreadPool::global().parallel_for(blocks, 1, [&](size_t begin, size_t end) {
    for (int64_t b = static_cast<int64_t>(begin); b < static_cast<int64_t>(end); ++b) {
      uint8_t* const tiles = (pack ? values : const_cast<uint8_t*>(src)) + b * groups * 256;
      uint8_t* const rows =
          (pack ? const_cast<uint8_t*>(src) : values) + b * kInt4TileRows * row_bytes;
      for (int64_t g = 0; g < groups; ++g) {  // the tiles in order, 64 bytes at a time
        uint8_t* tile = tiles + g * 256;
        for (int64_t r = 0; r < kInt4TileRows; ++r) {
          uint8_t* row = rows + r * row_bytes + g * (G / 2);
          for (int64_t c = 0; c < 4; ++c) {
            if (pack) {
              std::memcpy(tile + c * 64 + 4 * r, row + 4 * c, 4);
            } else {
              std::memcpy(row + 4 * c, tile + c * 64 + 4 * r, 4);
            }
          }
        }
        for (int64_t r = 0; r < kInt4TileRows; ++r) {
          const int64_t tiled = (b * groups + g) * kInt4TileRows + r;
          const int64_t rows = (b * kInt4TileRows + r) * groups + g;
          scales[pack ? tiled : rows] = src_scales[pack ? rows : tiled];
        }
      }
    }
  });
  // Rows past the last whole block: where kRows puts them in both layouts.
  std::memcpy(values + tiled_rows * row_bytes, src + tiled_rows * row_bytes,
              (n - tiled_rows) * row_bytes);
  std::copy_n(src_scales + tiled_rows * groups, (n - tiled_rows) * groups,
              scales + tiled_rows * groups);
}

Tensor copy_int4(const Tensor& w, QuantLayout to) {
  Tensor values = Tensor::allocate(DType::kU8, quantized_value_shape(QuantType::kInt4, w.shape));
  Tensor scales = Tensor::allocate(DType::kF16, quantized_scale_shape(w.shape));
  copy_int4_layout(w, to, static_cast<uint8_t*>(values.mutable_data()),
                   static_cast<F16*>(scales.mutable_data()));
  Tensor q = make_quantized_view(QuantType::kInt4, w.shape, values.data, scales.data, values.owner);
  q.scales_owner = scales.owner;
  q.layout = to;
  return q;
}

}  // namespace

void pack_int4_tiles(const Tensor& w, uint8_t* values, F16* scales) {
  MISTRAL_CHECK(w.quant == QuantType::kInt4 && w.layout == QuantLayout::kRows &&
                w.shape.size() == 2 && !w.on_device)
      << "pack_int4_tiles needs a host int4 matrix in row layout";
  copy_int4_layout(w, QuantLayout::kInt4Tiles16, values, scales);
}

Tensor pack_int4_tiles(const Tensor& w) {
  MISTRAL_CHECK(w.quant == QuantType::kInt4 && w.layout == QuantLayout::kRows &&
                w.shape.size() == 2 && !w.on_device)
      << "pack_int4_tiles needs a host int4 matrix in row layout";
  return copy_int4(w, QuantLayout::kInt4Tiles16);
}

Tensor unpack_int4_tiles(const Tensor& w) {
  MISTRAL_CHECK(w.quant == QuantType::kInt4 && w.layout == QuantLayout::kInt4Tiles16 &&
                w.shape.size() == 2 && !w.on_device)
      << "unpack_int4_tiles needs a host int4 matrix in tile layout";
  return copy_int4(w, QuantLayout::kRows);
}

void dequantize_row(const Tensor& q, int64_t row, float* out) {
  MISTRAL_CHECK(q.quantized()) << "dequantize_row: not a quantized tensor";
  const int64_t k = q.shape[1], groups = k / G;
  if (q.layout == QuantLayout::kInt4Tiles16) {
    const int64_t n = q.shape[0];
    const auto* values = static_cast<const uint8_t*>(q.data);
    const auto* scales = static_cast<const F16*>(q.scales);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t g = j / G, i = j % G;
      const uint8_t b = values[int4_tile_value_offset(n, k, row, g * (G / 2) + i % (G / 2))];
      const int level = (i < G / 2 ? (b & 0x0f) : (b >> 4)) - 8;
      out[j] = f16_to_float(scales[int4_tile_scale_index(n, k, row, g)]) * level;
    }
    return;
  }
  const auto* s = static_cast<const F16*>(q.scales) + row * groups;
  const auto* values = static_cast<const uint8_t*>(q.data) + row * (q.value_bytes() / q.shape[0]);
  for (int64_t j = 0; j < k; ++j)
    out[j] = f16_to_float(s[j / G]) * quantized_level(q.quant, values, j);
}

Tensor dequantize_matrix(const Tensor& q) {
  Tensor out = Tensor::allocate(DType::kF32, q.shape);
  auto* dst = static_cast<float*>(out.mutable_data());
  ThreadPool::global().parallel_for(q.shape[0], 64, [&](size_t begin, size_t end) {
    for (size_t r = begin; r < end; ++r) dequantize_row(q, r, dst + r * q.shape[1]);
  });
  return out;
}

}  // namespace mistral
