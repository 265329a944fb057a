// Int4 weights in the CPU backend's 16-row tiles (QuantLayout::kInt4Tiles16, core/tensor.h;
// kernels in backend/cpu/int4_tiles.h): packing round-trips byte for byte and dequantizes to the
// same values; the documented offsets hold; the AVX-512 kernel gives exactly the integer group
// sums of a scalar reference (exact float scales), handles the extreme nibbles and activations;
// the matmul over tiles, with rows past the last whole block and uneven thread shares, matches a
// double reference with the portable and the AVX-512 kernels; and the CPU backend places int4
// matrices (alone and joined) as tiles.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_features.h"
#include "backend/cpu/int4_tiles.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/quantized_matmul.h"
#include "core/quant.h"
#include "core/thread_pool.h"
#include "kernel_variant_test.h"
#include "random_values.h"

namespace mistral {
namespace {

using testing::randn;

constexpr int64_t G = kQuantGroupSize;
const bool kThreadsSet = (ThreadPool::set_default_threads(3), true);

Tensor quantized_int4(int64_t n, int64_t k, uint32_t seed) {
  std::vector<float> w = randn(n * k, seed, 0.02f);
  Tensor dense;
  dense.dtype = DType::kF32;
  dense.shape = {n, k};
  dense.data = w.data();
  Result<Tensor> q = quantize_matrix(dense, QuantType::kInt4);
  EXPECT_TRUE(q.ok());
  return std::move(q).value();
}

// An int4 matrix with random bytes (every nibble value) and scales chosen by `scale`.
struct RawInt4 {
  std::vector<uint8_t> values;
  std::vector<F16> scales;
  Tensor tensor;
};
RawInt4 raw_int4(int64_t n, int64_t k, uint32_t seed, float (*scale)(std::mt19937&)) {
  RawInt4 m;
  std::mt19937 rng(seed);
  m.values.resize(n * k / 2);
  for (uint8_t& b : m.values) b = static_cast<uint8_t>(rng());
  m.scales.resize(n * (k / G));
  for (F16& s : m.scales) s = float_to_f16(scale(rng));
  m.tensor =
      make_quantized_view(QuantType::kInt4, {n, k}, m.values.data(), m.scales.data(), nullptr);
  return m;
}

struct Shape {
  int64_t n, k;
};
// Rows: one block, blocks plus a tail, fewer than a block, uneven shares of 3 threads.
const Shape kShapes[] = {{16, G},      {17, 2 * G},  {5, 3 * G},   {33, 5 * G},
                         {48, 17 * G}, {70, 16 * G}, {112, 3 * G}, {16 * 7 + 9, 33 * G}};

TEST(Int4TilesTest, PackingRoundTripsAndDequantizesAlike) {
  for (Shape s : kShapes) {
    const Tensor rows = quantized_int4(s.n, s.k, 1);
    const Tensor tiles = pack_int4_tiles(rows);
    EXPECT_EQ(tiles.layout, QuantLayout::kInt4Tiles16);
    EXPECT_EQ(tiles.value_bytes(), rows.value_bytes());
    const Tensor back = unpack_int4_tiles(tiles);
    EXPECT_EQ(back.layout, QuantLayout::kRows);
    EXPECT_EQ(std::memcmp(back.data, rows.data, rows.value_bytes()), 0) << s.n << "x" << s.k;
    EXPECT_EQ(std::memcmp(back.scales, rows.scales, rows.scale_bytes()), 0) << s.n << "x" << s.k;
    if (s.n >= kInt4TileRows) {  // something moved
      EXPECT_NE(std::memcmp(tiles.data, rows.data, rows.value_bytes()), 0) << s.n << "x" << s.k;
    }
    std::vector<float> a(s.k), b(s.k);
    for (int64_t r = 0; r < s.n; ++r) {
      dequantize_row(rows, r, a.data());
      dequantize_row(tiles, r, b.data());
      ASSERT_EQ(a, b) << s.n << "x" << s.k << " row " << r;
    }
  }
}

TEST(Int4TilesTest, OffsetsAreTheDocumentedOnes) {
  const int64_t n = 40, k = 3 * G, groups = 3;  // two blocks and 8 rows in row layout
  // Row 17 = block 1, row 1 of it; byte 21 = group 1, byte 5 of the group = vector 1, byte 1.
  EXPECT_EQ(int4_tile_value_offset(n, k, 17, 21), ((1 * groups + 1) * 4 + 1) * 64 + 4 * 1 + 1);
  EXPECT_EQ(int4_tile_scale_index(n, k, 17, 2), (1 * groups + 2) * 16 + 1);
  EXPECT_EQ(int4_tile_value_offset(n, k, 35, 7), 35 * (k / 2) + 7);  // past the last block
  EXPECT_EQ(int4_tile_scale_index(n, k, 35, 2), 35 * groups + 2);
  std::vector<int> seen(n * k / 2, 0);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t byte = 0; byte < k / 2; ++byte) ++seen[int4_tile_value_offset(n, k, r, byte)];
  }
  for (int count : seen) ASSERT_EQ(count, 1);
}

// y = sum over groups of dx * dw * (integer dot), computed in int64.
std::vector<double> exact_block(const Tensor& w, const std::vector<int8_t>& x,
                                const std::vector<float>& dx) {
  const int64_t n = w.shape[0], k = w.shape[1];
  std::vector<double> y(n);
  std::vector<float> row(k);
  for (int64_t r = 0; r < n; ++r) {
    const auto* values = static_cast<const uint8_t*>(w.data) + r * (k / 2);
    double acc = 0;
    for (int64_t g = 0; g < k / G; ++g) {
      int64_t dot = 0;
      for (int64_t j = 0; j < G; ++j) {
        dot += int64_t{x[g * G + j]} * quantized_level(QuantType::kInt4, values, g * G + j);
      }
      acc += double(dx[g]) * f16_to_float(static_cast<const F16*>(w.scales)[r * (k / G) + g]) *
             double(dot);
    }
    y[r] = acc;
  }
  return y;
}

// Powers of two as scales keep every product and sum of a few groups exact in float, so the
// kernels must reproduce the integer group sums exactly.
float power_of_two(std::mt19937& rng) { return std::ldexp(1.0f, static_cast<int>(rng() % 3) - 1); }

TEST(Int4TilesTest, BlockKernelsGiveTheExactGroupSums) {
  const bool vnni = cpu::cpu_features().avx512_vnni();
  for (int64_t groups : {1, 2, 3, 7}) {
    const int64_t n = kInt4TileRows, k = groups * G;
    RawInt4 w = raw_int4(n, k, 3 + groups, power_of_two);
    const Tensor tiles = pack_int4_tiles(w.tensor);
    for (int variant = 0; variant < 3; ++variant) {  // random, all +127, all -128 activations
      std::mt19937 rng(variant);
      std::vector<int8_t> x(4 * k);
      for (int8_t& v : x) {
        v = variant == 0 ? static_cast<int8_t>(rng()) : variant == 1 ? 127 : -128;
      }
      std::vector<float> dx(4 * groups);
      for (float& d : dx) d = power_of_two(rng);
      std::vector<int32_t> xs(4 * groups);
      cpu::Int4TileArgs a;
      a.groups = groups;
      a.mx = 4;
      a.values = static_cast<const uint8_t*>(tiles.data);
      a.scales = static_cast<const F16*>(tiles.scales);
      std::vector<float> portable(4 * n), fast(4 * n);
      for (int i = 0; i < 4; ++i) {
        cpu::int4_tile_offsets(x.data() + i * k, groups, xs.data() + i * groups);
        a.x[i] = x.data() + i * k;
        a.dx[i] = dx.data() + i * groups;
        a.xs[i] = xs.data() + i * groups;
      }
      for (int mx = 1; mx <= 4; ++mx) {
        a.mx = mx;
        for (int i = 0; i < 4; ++i) a.y[i] = portable.data() + i * n;
        cpu::int4_tile_block_portable(a);
        for (int i = 0; i < 4; ++i) a.y[i] = fast.data() + i * n;
        if (vnni) cpu::int4_tile_block_avx512_vnni(a);
        if (mx == 1) {  // decode's two blocks in one pass (here the same block twice)
          std::vector<float> second(n, -1.0f);
          a.values2 = a.values;
          a.scales2 = a.scales;
          a.y2 = second.data();
          cpu::int4_tile_block_portable(a);
          EXPECT_EQ(second, std::vector<float>(portable.begin(), portable.begin() + n));
          if (vnni) {
            cpu::int4_tile_block_avx512_vnni(a);
            EXPECT_EQ(second, std::vector<float>(portable.begin(), portable.begin() + n));
            EXPECT_EQ(std::vector<float>(fast.begin(), fast.begin() + n), second);
          }
          a.values2 = nullptr;
        }
        for (int i = 0; i < mx; ++i) {
          const std::vector<double> want = exact_block(
              w.tensor, std::vector<int8_t>(x.begin() + i * k, x.begin() + (i + 1) * k),
              std::vector<float>(dx.begin() + i * groups, dx.begin() + (i + 1) * groups));
          for (int64_t r = 0; r < n; ++r) {
            ASSERT_EQ(portable[i * n + r], want[r])
                << "groups " << groups << " variant " << variant << " mx " << mx << " row " << r;
            if (vnni) {
              ASSERT_EQ(fast[i * n + r], want[r])
                  << "groups " << groups << " variant " << variant << " mx " << mx << " row " << r;
            }
          }
        }
      }
    }
  }
}

// The whole matmul over tiles against a double reference of the same quantized activations, with
// the AVX-512 and the portable kernels (param: portable only).
class Int4TilesMatmulTest : public testing::VnniOrPortableTest {};

TEST_P(Int4TilesMatmulTest, MatchesTheReference) {
  for (Shape s : kShapes) {
    for (int64_t m : {1, 2, 3, 4, 5, 9}) {
      const Tensor rows = quantized_int4(s.n, s.k, 7);
      const Tensor tiles = pack_int4_tiles(rows);
      std::vector<float> x = randn(m * s.k, 8);
      cpu::QuantizedRows xq;
      cpu::quantize_rows(x.data(), m, s.k, &xq);
      std::vector<float> y(m * s.n, -1.0f);
      cpu::matmul(x.data(), m, tiles, y.data());
      std::vector<float> row(s.k);
      for (int64_t r = 0; r < s.n; ++r) {
        dequantize_row(rows, r, row.data());
        for (int64_t i = 0; i < m; ++i) {
          double want = 0;
          for (int64_t j = 0; j < s.k; ++j) {
            want += double(xq.values[i * s.k + j]) * xq.scales[i * (s.k / G) + j / G] * row[j];
          }
          // Integer group sums are exact; only the float sum over groups is rounded.
          ASSERT_NEAR(y[i * s.n + r], want, 1e-5 * (1.0 + std::fabs(want)))
              << "n=" << s.n << " k=" << s.k << " m=" << m << " row " << r << " x row " << i;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, Int4TilesMatmulTest, ::testing::Values(false, true),
                         testing::kernel_variant_name);

TEST(Int4TilesTest, CpuBackendPlacesInt4MatricesAsTiles) {
  if (!cpu::cpu_features().avx512_vnni()) GTEST_SKIP() << "tiles are made for AVX-512 VNNI only";
  auto backend = make_cpu_backend();
  const int64_t k = 4 * G;
  const Tensor a = quantized_int4(32, k, 11), b = quantized_int4(16, k, 12);
  const Tensor c = quantized_int4(8, k, 13);  // fewer rows than a tile
  Result<Tensor> placed = backend->place_weight(a, WeightUse::kMatrix, "a");
  ASSERT_TRUE(placed.ok());
  EXPECT_EQ(placed->layout, QuantLayout::kInt4Tiles16);
  EXPECT_EQ(backend->place_weight(a, WeightUse::kEmbedding, "a")->data, a.data);  // lookups
  EXPECT_EQ(backend->place_weight(c, WeightUse::kMatrix, "c")->layout, QuantLayout::kRows);
  Result<std::vector<Tensor>> joined = backend->place_concatenated({a, b}, "a, b");
  ASSERT_TRUE(joined.ok());
  ASSERT_EQ(joined->size(), 3u);
  EXPECT_EQ((*joined)[0].shape, (std::vector<int64_t>{48, k}));
  // The whole and its parts compute what the row-layout matrices compute.
  std::vector<float> x = randn(k, 14);
  std::vector<float> whole(48), part(32), want(48);
  cpu::matmul(x.data(), 1, (*joined)[0], whole.data());
  cpu::matmul(x.data(), 1, a, want.data());
  cpu::matmul(x.data(), 1, b, want.data() + 32);
  for (int64_t r = 0; r < 48; ++r) EXPECT_NEAR(whole[r], want[r], 1e-5 * (1 + std::fabs(want[r])));
  cpu::matmul(x.data(), 1, (*joined)[2], part.data());
  for (int64_t r = 0; r < 16; ++r) EXPECT_EQ(part[r], whole[32 + r]);
  EXPECT_TRUE(backend->place_concatenated({a, c}, "a, c")->empty());  // c: not whole tiles
}

}  // namespace
}  // namespace mistral
