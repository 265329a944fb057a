// The decode GEMV, the mixed-input GEMM, the cuBLASLt GEMM, dequantization and device-memory
// errors, against double-precision references computed here from the exact weight values.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda_test_util.h"

namespace mistral::cuda::testing {
namespace {

const WeightFormat kFormats[] = {WeightFormat::kBF16, WeightFormat::kInt8, WeightFormat::kInt4};

// y = x * W^T in double; `mag` = sum of |x_p w_p|, the scale of float32 rounding error.
template <typename X>
void reference(const std::vector<X>& x, int64_t m, const TestWeight& w, std::vector<double>* y,
               std::vector<double>* mag, const std::vector<double>* weights = nullptr) {
  const std::vector<double>& wv = weights != nullptr ? *weights : w.dequant;
  y->assign(m * w.n, 0.0);
  mag->assign(m * w.n, 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < w.n; ++j) {
      double s = 0, a = 0;
      for (int64_t p = 0; p < w.k; ++p) {
        const double t = double(x[i * w.k + p]) * wv[j * w.k + p];
        s += t;
        a += std::fabs(t);
      }
      (*y)[i * w.n + j] = s;
      (*mag)[i * w.n + j] = a;
    }
  }
}

// x as the default GEMV multiplies it with quantized weights (gemv_rows.h): per group of 32,
// q = round-half-even(x * (127 / max|x|)) in float32, times max|x| / 127.
std::vector<double> quantized_x(const std::vector<float>& x) {
  std::vector<double> out(x.size());
  for (size_t g = 0; g < x.size() / 32; ++g) {
    float amax = 0.0f;
    for (size_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[g * 32 + j]));
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    const float dx = amax / 127.0f;
    for (size_t j = 0; j < 32; ++j) {
      const float scaled = x[g * 32 + j] * inv;
      out[g * 32 + j] = std::nearbyint(scaled) * double(dx);
    }
  }
  return out;
}

struct Inputs {
  std::vector<float> x;  // bf16-rounded values
  DeviceBuffer d_x;
};

Inputs make_x(int64_t m, int64_t k, uint32_t seed) {
  Inputs in;
  const std::vector<BF16> xb = to_bf16(randn(m * k, seed), &in.x);
  in.d_x = upload(xb);
  return in;
}

// GEMV products are exact and accumulate in float32 (tensor-core adds, group partial sums times
// the scale): errors stay near 2^-24 * sqrt(k) * mag. The bound 4e-5 * mag (vs ~4e-3 for bf16
// weights rounded once more) is tight enough to catch a wrong element, nibble or scale.
constexpr double kGemvTol = 4e-5;

void expect_close(const std::vector<float>& y, const std::vector<double>& ref,
                  const std::vector<double>& mag, double rel_tol, double out_rel,
                  const std::string& what) {
  ASSERT_EQ(y.size(), ref.size());
  for (size_t i = 0; i < y.size(); ++i) {
    ASSERT_TRUE(std::isfinite(y[i])) << what << " element " << i << " not written or not finite";
    ASSERT_NEAR(y[i], ref[i], rel_tol * mag[i] + out_rel * std::fabs(ref[i]) + 1e-30)
        << what << " element " << i;
  }
}

TEST_F(CudaTest, GemvMatchesReferenceOverOddShapesAndEveryRowCount) {
  struct Shape {
    int64_t n, k;
  };
  const Shape bf16_shapes[] = {{1, 8}, {15, 40}, {17, 264}, {100, 1000}, {333, 2056}, {64, 1024}};
  // k = 1024: rows of 32 (int4) or 64 (int8) 16-byte pieces, one or two per lane.
  const Shape quant_shapes[] = {{1, 32},     {15, 96},    {17, 224},
                                {100, 1056}, {333, 2080}, {333, 1024}};
  ASSERT_TRUE(ctx().reserve_scratch(size_t{64} << 20).ok());
  uint32_t seed = 1;
  for (WeightFormat f : kFormats) {
    for (const Shape& s : f == WeightFormat::kBF16 ? bf16_shapes : quant_shapes) {
      const TestWeight w = make_weight(f, s.n, s.k, seed++);
      const Inputs in = make_x(kMaxGemvRows, s.k, seed++);
      std::vector<double> ref, mag, ref_q, mag_q;
      reference(in.x, kMaxGemvRows, w, &ref, &mag);
      const bool quantized = f != WeightFormat::kBF16;
      if (quantized) reference(quantized_x(in.x), kMaxGemvRows, w, &ref_q, &mag_q);
      for (int64_t m = 1; m <= kMaxGemvRows; ++m) {
        // Default grid; one warp for everything; 7 warps (shares split tiles at odd places);
        // one run per warp (every tile split among all its runs' warps).
        for (auto [warps, stages] : {std::pair{0, 0}, {1, 4}, {7, 3}, {100000, 4}}) {
          const std::string what = std::string(weight_format_name(f)) +
                                   " n=" + std::to_string(s.n) + " k=" + std::to_string(s.k) +
                                   " m=" + std::to_string(m) + " warps=" + std::to_string(warps) +
                                   " stages=" + std::to_string(stages);
          const GemvOptions opt{warps, stages};
          ASSERT_TRUE(ctx().reserve_scratch(gemv_scratch_bytes(ctx(), w.device(), opt)).ok());
          DeviceBuffer y = poisoned(m * s.n * sizeof(float));
          gemv(ctx(), static_cast<const bf16*>(in.d_x.data()), m, w.device(), y.as<float>(), opt);
          // The default (row) kernel quantizes x for quantized weights; the tile kernel does not.
          const bool qx = quantized && warps == 0 && stages == 0;
          const std::vector<double>& rf = qx ? ref_q : ref;
          const std::vector<double>& mg = qx ? mag_q : mag;
          const std::vector<double> r(rf.begin(), rf.begin() + m * s.n);
          const std::vector<double> a(mg.begin(), mg.begin() + m * s.n);
          expect_close(download<float>(y, m * s.n), r, a, kGemvTol, 0.0, what);
          if (HasFatalFailure()) return;
        }
      }
      // bf16 output: the float32 result rounded once more (half an ulp, 2^-9 relative).
      DeviceBuffer yb = poisoned(kMaxGemvRows * s.n * sizeof(bf16));
      gemv(ctx(), static_cast<const bf16*>(in.d_x.data()), kMaxGemvRows, w.device(), yb.as<bf16>());
      expect_close(download_as_float<bf16>(yb, kMaxGemvRows * s.n), quantized ? ref_q : ref,
                   quantized ? mag_q : mag, kGemvTol, 1.0 / 256, "bf16 out");
      if (HasFatalFailure()) return;
    }
  }
}

TEST_F(CudaTest, GemvMistralShapesMatchReference) {
  ASSERT_TRUE(ctx().reserve_scratch(size_t{64} << 20).ok());
  uint32_t seed = 100;
  for (WeightFormat f : kFormats) {
    for (auto [n, k] : {std::pair<int64_t, int64_t>{1024, 4096}, {4096, 14336}}) {
      const TestWeight w = make_weight(f, n, k, seed++);
      const Inputs in = make_x(kMaxGemvRows, k, seed++);
      std::vector<double> ref, mag;
      if (f == WeightFormat::kBF16) {
        reference(in.x, kMaxGemvRows, w, &ref, &mag);
      } else {
        reference(quantized_x(in.x), kMaxGemvRows, w, &ref, &mag);
      }
      DeviceBuffer y = poisoned(kMaxGemvRows * n * sizeof(float));
      gemv(ctx(), static_cast<const bf16*>(in.d_x.data()), kMaxGemvRows, w.device(), y.as<float>());
      expect_close(
          download<float>(y, kMaxGemvRows * n), ref, mag, kGemvTol, 0.0,
          std::string(weight_format_name(f)) + " " + std::to_string(n) + "x" + std::to_string(k));
      if (HasFatalFailure()) return;
    }
  }
}

// A row of x gives the same bits alone or in a batch of 8, and the same bits on every run.
TEST_F(CudaTest, GemvIsBatchInvariantAndDeterministic) {
  ASSERT_TRUE(ctx().reserve_scratch(size_t{64} << 20).ok());
  for (auto [warps, stages] : {std::pair{0, 0}, {7, 4}}) {
    for (WeightFormat f : kFormats) {
      const GemvOptions opt{warps, stages};
      const int64_t n = 1000, k = 4096;
      const TestWeight w = make_weight(f, n, k, 7);
      const Inputs in = make_x(kMaxGemvRows, k, 8);
      DeviceBuffer batch = poisoned(kMaxGemvRows * n * sizeof(float));
      gemv(ctx(), static_cast<const bf16*>(in.d_x.data()), kMaxGemvRows, w.device(),
           batch.as<float>(), opt);
      const std::vector<float> all = download<float>(batch, kMaxGemvRows * n);
      gemv(ctx(), static_cast<const bf16*>(in.d_x.data()), kMaxGemvRows, w.device(),
           batch.as<float>(), opt);
      EXPECT_EQ(all, download<float>(batch, kMaxGemvRows * n)) << weight_format_name(f);
      for (int64_t row = 0; row < kMaxGemvRows; ++row) {
        DeviceBuffer one = poisoned(n * sizeof(float));
        gemv(ctx(), static_cast<const bf16*>(in.d_x.data()) + row * k, 1, w.device(),
             one.as<float>(), opt);
        const std::vector<float> alone = download<float>(one, n);
        EXPECT_EQ(alone, std::vector<float>(all.begin() + row * n, all.begin() + (row + 1) * n))
            << weight_format_name(f) << " row " << row;
      }
    }
  }
}

TEST_F(CudaTest, DequantizeGivesBf16OfScaleTimesQ) {
  // (n, k, first row, end row): a row shorter than a block of threads; more rows than the grid's
  // y extent (65,535), which the blocks stride over; a row over two blocks, the second part-full.
  struct Case {
    int64_t n, k, begin, end;
  };
  uint32_t seed = 11;
  for (WeightFormat f : kFormats) {
    for (const Case c : {Case{37, 96, 5, 35}, Case{70000, 32, 1, 70000}, Case{20, 2112, 3, 20}}) {
      const TestWeight w = make_weight(f, c.n, c.k, seed++);
      const int64_t count = (c.end - c.begin) * c.k;
      DeviceBuffer out = poisoned(count * sizeof(bf16));
      dequantize(ctx(), w.device(), c.begin, c.end, out.as<bf16>());
      const std::vector<BF16> got = download<BF16>(out, count);
      for (int64_t i = 0; i < count; ++i) {
        // scale * q is exact in float32 (11 + 8 significant bits), then rounded to bf16.
        const BF16 want = float_to_bf16(static_cast<float>(w.dequant[c.begin * c.k + i]));
        ASSERT_EQ(got[i].bits, want.bits)
            << weight_format_name(f) << " n=" << c.n << " k=" << c.k << " element " << i;
      }
    }
  }
}

TEST(DequantTileRows, EqualTilesOfWholeSixteensWithinTheBudgetAndTheScratch) {
  constexpr size_t kMiB = size_t{1} << 20;
  // 7B gate|up (28,672 rows of 8 KB) in 25 MiB tiles: 3,200 rows at most, 9 tiles of 3,200.
  EXPECT_EQ(dequant_tile_rows(28672, 4096, 64 * kMiB, 25 * kMiB), 3200);
  // 7B down (4,096 rows of 28 KB): 912 rows at most, 5 tiles of 832 (the last 768).
  EXPECT_EQ(dequant_tile_rows(4096, 14336, 64 * kMiB, 25 * kMiB), 832);
  // The scratch is the bound when it is the smaller; a whole W in one tile when it fits.
  EXPECT_EQ(dequant_tile_rows(28672, 4096, 16 * kMiB, 64 * kMiB), 2048);
  EXPECT_EQ(dequant_tile_rows(6144, 4096, 64 * kMiB, 64 * kMiB), 6144);
  EXPECT_EQ(dequant_tile_rows(17, 96, 64 * kMiB, 64 * kMiB), 32);
  // A budget under 16 rows still takes 16 when the scratch holds them; none when it does not.
  EXPECT_EQ(dequant_tile_rows(100, 4096, 64 * kMiB, 1024), 16);
  EXPECT_EQ(dequant_tile_rows(100, 4096, 15 * 8192, 64 * kMiB), 0);
  for (int64_t n : {1, 15, 16, 17, 300, 4097, 28672}) {
    for (int64_t k : {32, 96, 4096, 14336}) {
      for (size_t budget : {size_t{48} << 10, 3 * kMiB, 25 * kMiB}) {
        const int64_t rows = dequant_tile_rows(n, k, 64 * kMiB, budget);
        const std::string what = "n=" + std::to_string(n) + " k=" + std::to_string(k) +
                                 " budget=" + std::to_string(budget);
        ASSERT_GT(rows, 0) << what;
        EXPECT_EQ(rows % 16, 0) << what;
        EXPECT_LE(rows * k * 2, std::max<int64_t>(int64_t(budget), 16 * k * 2)) << what;
        // Equal tiles: as many as the budget's rows need, and the last one not smaller by a tile.
        const int64_t most = std::max<int64_t>(int64_t(budget) / (k * 2) / 16, 1) * 16;
        EXPECT_EQ((n + rows - 1) / rows, (n + most - 1) / most) << what;
      }
    }
  }
}

TEST(GemmScratchBytes, OneTileOfAQuantizedWeightWithinTheCapAndNoneForBf16) {
  if (std::getenv("MISTRAL_DEQUANT_TILE_MB") != nullptr) GTEST_SKIP() << "tile size overridden";
  DeviceWeight w;
  w.n = 300;
  w.k = 256;
  w.format = WeightFormat::kBF16;
  EXPECT_EQ(gemm_scratch_bytes(w), 0u);
  for (WeightFormat f : {WeightFormat::kInt8, WeightFormat::kInt4}) {
    w.format = f;
    EXPECT_EQ(gemm_scratch_bytes(w), 304u * 256 * 2) << weight_format_name(f);  // 300 rows -> 304
    w.n = 28672;  // 7B gate|up: 224 MiB of bf16, one tile
    w.k = 4096;
    EXPECT_EQ(gemm_scratch_bytes(w), size_t{28672} * 4096 * 2) << weight_format_name(f);
    w.n = 300;
    w.k = 256;
  }
  w.n = 100000;  // 800 MiB of bf16: tiles of at most kDequantTileMB
  w.k = 4096;
  const size_t cap = size_t{kDequantTileMB} << 20;
  EXPECT_LE(gemm_scratch_bytes(w), cap);
  EXPECT_GT(gemm_scratch_bytes(w), cap / 2);
}

TEST_F(CudaTest, GemmMatchesReferenceForEveryFormatAndOutputType) {
  // A small scratch, so quantized weights go through several dequantized tiles.
  auto small = KernelContext::create(nullptr, size_t{48} << 10);
  ASSERT_TRUE(small.ok()) << small.status().message();
  uint32_t seed = 200;
  for (WeightFormat f : kFormats) {
    for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{9, 17, 96},
                           {33, 300, 256},
                           {130, 64, 512},
                           {512, 96, 1024}}) {
      const TestWeight w = make_weight(f, n, k, seed++);
      const Inputs in = make_x(m, k, seed++);
      // Quantized weights are multiplied as bf16(scale * q): the reference uses those values.
      std::vector<double> rounded = w.dequant;
      for (double& v : rounded) v = bf16_round(static_cast<float>(v));
      std::vector<double> ref, mag;
      reference(in.x, m, w, &ref, &mag, &rounded);
      const std::string what = std::string(weight_format_name(f)) + " m=" + std::to_string(m) +
                               " n=" + std::to_string(n) + " k=" + std::to_string(k);
      DeviceBuffer y = poisoned(m * n * sizeof(float));
      gemm(**small, static_cast<const bf16*>(in.d_x.data()), m, w.device(), y.as<float>());
      // cuBLASLt accumulates in float32 (possibly split over k): same bound as the GEMV.
      expect_close(download<float>(y, m * n), ref, mag, kGemvTol, 0.0, what);
      DeviceBuffer yb = poisoned(m * n * sizeof(bf16));
      linear(**small, static_cast<const bf16*>(in.d_x.data()), m, w.device(), yb.as<bf16>());
      expect_close(download_as_float<bf16>(yb, m * n), ref, mag, kGemvTol, 1.0 / 256,
                   what + " bf16 out");
      if (HasFatalFailure()) return;
    }
  }
}

// Every weight of an int8 / int4 matrix, through gemm_mixed, is gemm's value bf16(scale * q) bit
// for bit: rows of x one-hot at k positions j give those columns of W exactly (every other
// product is zero).
TEST_F(CudaTest, GemmMixedExpandsEveryWeightToBf16OfScaleTimesQ) {
  uint32_t seed = 400;
  for (WeightFormat f : {WeightFormat::kInt8, WeightFormat::kInt4}) {
    const int64_t n = 300, k = 2112;  // 2 row blocks; k ends inside a step
    const TestWeight w = make_weight(f, n, k, seed++);
    ASSERT_TRUE(ctx().reserve_scratch(gemm_mixed_scratch_bytes(ctx(), w.device())).ok());
    for (int64_t j0 = 0; j0 < k; j0 += kMaxMixedRows) {
      const int64_t m = std::min(kMaxMixedRows, k - j0);
      std::vector<BF16> x(m * k, float_to_bf16(0.0f));
      for (int64_t i = 0; i < m; ++i) x[i * k + j0 + i] = float_to_bf16(1.0f);
      const DeviceBuffer d_x = upload(x);
      DeviceBuffer y = poisoned(m * n * sizeof(float));
      gemm_mixed(ctx(), static_cast<const bf16*>(d_x.data()), m, w.device(), y.as<float>());
      const std::vector<float> got = download<float>(y, m * n);
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t r = 0; r < n; ++r) {
          const float want = bf16_round(static_cast<float>(w.dequant[r * k + j0 + i]));
          ASSERT_EQ(got[i * n + r], want)
              << weight_format_name(f) << " row " << r << " k " << j0 + i;
        }
      }
    }
  }
}

TEST_F(CudaTest, GemmMixedMatchesReferenceOverOddShapes) {
  struct Case {
    int64_t n, k;
    std::vector<int64_t> ms;
  };
  // k = 96: one partial step; 300 x 2112: split k, the last step part-full; 70,000 rows: enough
  // row blocks for one split (results stored directly); 1000 x 4096: whole steps and chunks.
  const Case cases[] = {{17, 96, {1, 9, 32}},
                        {300, 2112, {9, 16, 17, 32}},
                        {70000, 128, {9, 32}},
                        {1000, 4096, {12, 32}}};
  uint32_t seed = 300;
  for (WeightFormat f : {WeightFormat::kInt8, WeightFormat::kInt4}) {
    for (const Case& c : cases) {
      const TestWeight w = make_weight(f, c.n, c.k, seed++);
      ASSERT_TRUE(ctx().reserve_scratch(gemm_mixed_scratch_bytes(ctx(), w.device())).ok());
      const int64_t most = c.ms.back();
      const Inputs in = make_x(most, c.k, seed++);
      std::vector<double> rounded = w.dequant;
      for (double& v : rounded) v = bf16_round(static_cast<float>(v));
      std::vector<double> ref, mag;
      reference(in.x, most, w, &ref, &mag, &rounded);
      for (int64_t m : c.ms) {
        const std::string what = std::string(weight_format_name(f)) + " m=" + std::to_string(m) +
                                 " n=" + std::to_string(c.n) + " k=" + std::to_string(c.k);
        const std::vector<double> r(ref.begin(), ref.begin() + m * c.n);
        const std::vector<double> a(mag.begin(), mag.begin() + m * c.n);
        DeviceBuffer y = poisoned(m * c.n * sizeof(float));
        gemm_mixed(ctx(), static_cast<const bf16*>(in.d_x.data()), m, w.device(), y.as<float>());
        expect_close(download<float>(y, m * c.n), r, a, kGemvTol, 0.0, what);
        DeviceBuffer yb = poisoned(m * c.n * sizeof(bf16));
        gemm_mixed(ctx(), static_cast<const bf16*>(in.d_x.data()), m, w.device(), yb.as<bf16>());
        expect_close(download_as_float<bf16>(yb, m * c.n), r, a, kGemvTol, 1.0 / 256,
                     what + " bf16 out");
        if (HasFatalFailure()) return;
      }
    }
  }
}

// A row of x gives the same bits in any batch gemm_mixed takes (both column-block instances),
// and the same bits on every run.
TEST_F(CudaTest, GemmMixedIsBatchInvariantAndDeterministic) {
  for (WeightFormat f : {WeightFormat::kInt8, WeightFormat::kInt4}) {
    const int64_t n = 1000, k = 4096;
    const TestWeight w = make_weight(f, n, k, 17);
    ASSERT_TRUE(ctx().reserve_scratch(gemm_mixed_scratch_bytes(ctx(), w.device())).ok());
    const Inputs in = make_x(kMaxMixedRows, k, 18);
    const auto* x = static_cast<const bf16*>(in.d_x.data());
    DeviceBuffer batch = poisoned(kMaxMixedRows * n * sizeof(float));
    gemm_mixed(ctx(), x, kMaxMixedRows, w.device(), batch.as<float>());
    const std::vector<float> all = download<float>(batch, kMaxMixedRows * n);
    gemm_mixed(ctx(), x, kMaxMixedRows, w.device(), batch.as<float>());
    EXPECT_EQ(all, download<float>(batch, kMaxMixedRows * n)) << weight_format_name(f);
    for (int64_t m : {int64_t{1}, int64_t{9}, int64_t{16}, int64_t{17}, int64_t{31}}) {
      DeviceBuffer part = poisoned(m * n * sizeof(float));
      gemm_mixed(ctx(), x, m, w.device(), part.as<float>());
      EXPECT_EQ(download<float>(part, m * n), std::vector<float>(all.begin(), all.begin() + m * n))
          << weight_format_name(f) << " m=" << m;
    }
  }
}

TEST_F(CudaTest, LinearDispatchesEveryPath) {
  ASSERT_TRUE(ctx().reserve_scratch(size_t{64} << 20).ok());
  const TestWeight w = make_weight(WeightFormat::kInt4, 200, 512, 31);
  // The GEMV, the mixed-input GEMM, and the dequantize-then-cuBLASLt GEMM.
  for (int64_t m : {kMaxGemvRows, kMaxGemvRows + 1, kMaxMixedRows, kMaxMixedRows + 1}) {
    const Inputs in = make_x(m, 512, 32);
    std::vector<double> ref, mag;
    std::vector<double> rounded = w.dequant;
    if (m > kMaxGemvRows) {  // either GEMM: bf16(scale * q) times x
      for (double& v : rounded) v = bf16_round(static_cast<float>(v));
      reference(in.x, m, w, &ref, &mag, &rounded);
    } else {  // GEMV: scale * q times x quantized per group
      reference(quantized_x(in.x), m, w, &ref, &mag);
    }
    DeviceBuffer y = poisoned(m * 200 * sizeof(float));
    linear(ctx(), static_cast<const bf16*>(in.d_x.data()), m, w.device(), y.as<float>());
    expect_close(download<float>(y, m * 200), ref, mag, kGemvTol, 0.0,
                 "linear m=" + std::to_string(m));
  }
}

TEST_F(CudaTest, FailedAllocationNamesBytesAndFreeMemory) {
  const size_t huge = size_t{1} << 52;  // 4 PiB
  auto r = DeviceBuffer::allocate(huge, "a test tensor");
  ASSERT_FALSE(r.ok());
  const std::string& msg = r.status().message();
  EXPECT_NE(msg.find(std::to_string(huge) + " bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("a test tensor"), std::string::npos) << msg;
  EXPECT_NE(msg.find("free of"), std::string::npos) << msg;
  const Status st = ctx().reserve_scratch(huge);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("CUDA kernel scratch"), std::string::npos) << st.message();
  // The failure left no error behind: the device still works.
  auto ok = DeviceBuffer::allocate(1024, "small");
  EXPECT_TRUE(ok.ok());
  MISTRAL_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace mistral::cuda::testing
