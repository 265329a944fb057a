// Backend::fused_matmul's default (the ops one after another), as the CPU backend runs it,
// against a double-precision reference of the same formulas: rmsnorm before the product, the
// residual add or silu(gate) * up after it, over one and several rows.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "random_values.h"

namespace mistral {
namespace {

using testing::randn;

Tensor f32_tensor(const std::vector<float>& values, std::vector<int64_t> shape) {
  Tensor t = Tensor::allocate(DType::kF32, std::move(shape));
  std::copy(values.begin(), values.end(), static_cast<float*>(t.mutable_data()));
  return t;
}

struct Case {
  bool norm, swiglu, residual;
  std::string name() const {
    return std::string(norm ? "norm " : "") + (swiglu ? "swiglu" : residual ? "residual" : "store");
  }
};

TEST(FusedMatmulTest, DefaultRunsTheOpsInTurn) {
  auto backend = make_cpu_backend();
  const int64_t k = 48, n = 22;
  const float eps = 1e-5f;
  const std::vector<float> wv = randn(n * k, 1, 0.2f), nv = randn(k, 2, 0.3f);
  const Tensor w = f32_tensor(wv, {n, k});
  std::vector<float> norm_values = nv;
  for (float& v : norm_values) v += 1.0f;
  const Tensor norm = f32_tensor(norm_values, {k});
  const Case cases[] = {{false, false, false}, {true, false, false}, {false, false, true},
                        {false, true, false},  {true, true, false},  {true, false, true}};
  for (int64_t m : {1, 3}) {
    const std::vector<float> x = randn(m * k, 3 + m, 2.0f);
    const std::vector<float> y0 = randn(m * n, 4 + m);
    for (const Case& c : cases) {
      const int64_t out_n = c.swiglu ? n / 2 : n;
      std::vector<float> y = c.residual ? y0 : std::vector<float>(m * out_n, NAN);
      std::vector<float> scratch(m * (k + n), NAN);
      MatmulFusion f;
      f.norm = c.norm ? &norm : nullptr;
      f.eps = eps;
      f.swiglu = c.swiglu;
      f.residual = c.residual;
      f.scratch = scratch.data();
      backend->fused_matmul(x.data(), m, w, y.data(), f);
      for (int64_t r = 0; r < m; ++r) {
        std::vector<double> h(k);
        double ms = 0;
        for (int64_t i = 0; i < k; ++i) ms += double(x[r * k + i]) * x[r * k + i];
        const double inv = c.norm ? 1.0 / std::sqrt(ms / k + eps) : 1.0;
        for (int64_t i = 0; i < k; ++i) h[i] = x[r * k + i] * inv * (c.norm ? norm_values[i] : 1.0);
        std::vector<double> p(n);
        for (int64_t j = 0; j < n; ++j) {
          for (int64_t i = 0; i < k; ++i) p[j] += h[i] * wv[j * k + i];
        }
        for (int64_t j = 0; j < out_n; ++j) {
          double want = p[j];
          if (c.swiglu) want = p[j] / (1.0 + std::exp(-p[j])) * p[j + n / 2];
          if (c.residual) want += y0[r * n + j];
          ASSERT_NEAR(y[r * out_n + j], want, 1e-4 * (1.0 + std::fabs(want)))
              << c.name() << " m=" << m << " row " << r << " j=" << j;
        }
      }
    }
  }
}

TEST(FusedMatmulTest, SwigluWithResidualIsRefused) {
  auto backend = make_cpu_backend();
  const Tensor w = f32_tensor(std::vector<float>(4 * 8, 0.5f), {4, 8});
  std::vector<float> x(8, 1.0f), y(4, 0.0f), scratch(12);
  MatmulFusion f;
  f.swiglu = f.residual = true;
  f.scratch = scratch.data();
  EXPECT_DEATH(backend->fused_matmul(x.data(), 1, w, y.data(), f), "do not combine");
}

}  // namespace
}  // namespace mistral
