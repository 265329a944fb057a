// The int8/int4 weight matmul (backend/cpu/quantized_matmul.h): both tile kernels against a
// double-precision reference built from the same quantized activations and the dequantized
// weights, over shapes with short tiles, odd row counts and group counts that are not multiples
// of the 16-group scale blocks (and, from 4 rows of x on, the packed-panel GEMM with short panels
// and every micro-kernel height); the activation quantization's error bound; and the whole matmul
// against a float matmul of the dequantized weights.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/cpu_features.h"
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

Tensor quantized(std::vector<float>& w, int64_t n, int64_t k, QuantType type) {
  Tensor dense;
  dense.dtype = DType::kF32;
  dense.shape = {n, k};
  dense.data = w.data();
  Result<Tensor> q = quantize_matrix(dense, type);
  EXPECT_TRUE(q.ok());
  return std::move(q).value();
}

// y[i, r] from the quantized activations and the dequantized weights, in double.
std::vector<double> reference(const cpu::QuantizedRows& xq, const Tensor& w) {
  const int64_t n = w.shape[0], k = w.shape[1];
  std::vector<double> y(xq.rows * n);
  std::vector<float> row(k);
  for (int64_t r = 0; r < n; ++r) {
    dequantize_row(w, r, row.data());
    for (int64_t i = 0; i < xq.rows; ++i) {
      double acc = 0;
      for (int64_t j = 0; j < k; ++j) {
        acc += static_cast<double>(xq.values[i * k + j]) * xq.scales[i * (k / G) + j / G] * row[j];
      }
      y[i * n + r] = acc;
    }
  }
  return y;
}

struct Shape {
  int64_t m, n, k;
};

class QuantizedMatmulTest : public testing::VnniOrPortableTest {};

TEST_P(QuantizedMatmulTest, MatchesTheReference) {
  for (QuantType type : {QuantType::kInt8, QuantType::kInt4}) {
    for (Shape s :
         {Shape{1, 1, G}, Shape{1, 5, 2 * G}, Shape{2, 4, 3 * G}, Shape{3, 7, 17 * G},
          Shape{4, 13, 16 * G}, Shape{5, 9, 33 * G}, Shape{9, 6, 5 * G}, Shape{1, 67, 64 * G},
          Shape{1, 9, 17 * G}, Shape{1, 70, 35 * G}, Shape{1, 3, 3 * G}, Shape{1, 601, 3 * G},
          // The packed-panel GEMM (m >= 4): panels of 32 columns, full and short, micro-kernels
          // of 6 rows and the remainders 1-5, a group count that is not a multiple of 8.
          Shape{6, 32, 2 * G}, Shape{7, 33, G}, Shape{11, 64, 9 * G}, Shape{17, 95, 4 * G},
          Shape{64, 40, 35 * G}}) {
      std::vector<float> w = randn(s.n * s.k, 1, 0.02f);
      std::vector<float> x = randn(s.m * s.k, 2);
      const Tensor q = quantized(w, s.n, s.k, type);
      std::vector<float> y(s.m * s.n);
      cpu::matmul(x.data(), s.m, q, y.data());
      cpu::QuantizedRows xq;
      cpu::quantize_rows(x.data(), s.m, s.k, &xq);
      const std::vector<double> ref = reference(xq, q);
      for (size_t i = 0; i < y.size(); ++i) {
        // Integer group sums are exact; only the float sum over groups is reordered.
        ASSERT_NEAR(y[i], ref[i], 1e-5 * (1.0 + std::fabs(ref[i])))
            << quant_type_name(type) << " m=" << s.m << " n=" << s.n << " k=" << s.k << " i=" << i;
      }
    }
  }
}

TEST_P(QuantizedMatmulTest, CloseToTheFloatProductOfTheDequantizedWeights) {
  const int64_t m = 3, n = 40, k = 4096;
  std::vector<float> w = randn(n * k, 3, 0.02f);
  std::vector<float> x = randn(m * k, 4);
  for (QuantType type : {QuantType::kInt8, QuantType::kInt4}) {
    const Tensor q = quantized(w, n, k, type);
    const Tensor dense = dequantize_matrix(q);
    std::vector<float> y(m * n), y_dense(m * n);
    cpu::matmul(x.data(), m, q, y.data());
    cpu::matmul(x.data(), m, dense, y_dense.data());
    double err = 0, norm = 0;
    for (int64_t i = 0; i < m * n; ++i) {
      err += (y[i] - y_dense[i]) * double(y[i] - y_dense[i]);
      norm += y_dense[i] * double(y_dense[i]);
    }
    // Int8 activations add ~0.5% relative error (normal inputs, max|x| / 254 per step).
    EXPECT_LT(std::sqrt(err / norm), 0.01) << quant_type_name(type);
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, QuantizedMatmulTest, ::testing::Values(false, true),
                         testing::kernel_variant_name);

TEST(QuantizeRowsTest, ErrorIsAtMostHalfAStep) {
  const int64_t m = 3, k = 5 * G;
  std::vector<float> x = randn(m * k, 5);
  x[7] = 40.0f;
  cpu::QuantizedRows q;
  cpu::quantize_rows(x.data(), m, k, &q);
  for (int64_t i = 0; i < m * k; ++i) {
    const float scale = q.scales[i / G];
    ASSERT_LE(std::fabs(q.values[i] * scale - x[i]), scale * 0.5f * (1 + 1e-6f)) << i;
  }
  EXPECT_EQ(q.values[7], 127);
}

}  // namespace
}  // namespace mistral
