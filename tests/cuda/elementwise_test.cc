// RMSNorm, rotary embeddings, silu * up, add and the embedding gather, in float32 and bf16,
// against references written here from Hugging Face's formulas. The bf16 references round where
// HF's bf16 model rounds, so the kernels must land within one bf16 step (2^-8 relative) of them;
// the float32 ones within a few float ulps.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "cuda_test_util.h"

namespace mistral::cuda::testing {
namespace {

// Device copy of `values` as T; `held` receives the values T holds.
template <typename T>
DeviceBuffer upload_as(const std::vector<float>& values, std::vector<float>* held) {
  if constexpr (std::is_same_v<T, float>) {
    *held = values;
    return upload(values);
  } else {
    return upload(to_bf16(values, held));
  }
}

template <typename T>
float round_t(double v) {
  return std::is_same_v<T, float> ? static_cast<float>(v) : bf16_round(static_cast<float>(v));
}

// Tolerance for a result of magnitude `scale`: float32 a few ulps; bf16 one bf16 step plus the
// float32 noise that can move a value across a bf16 rounding boundary.
template <typename T>
double tol(double scale) {
  return (std::is_same_v<T, float> ? 2e-6 : 1.0 / 128) * scale + 1e-30;
}

template <typename T>
void check_rmsnorm(KernelContext& ctx, bool fused) {
  for (int64_t m : {1, 3, 7}) {
    for (int64_t n : {8, 13, 100, 4096, 4104}) {
      SCOPED_TRACE(::testing::Message() << "m=" << m << " n=" << n << " fused=" << fused);
      std::vector<float> x, w, d;
      DeviceBuffer dx = upload_as<T>(randn(m * n, 1 + n + m, 2.0f), &x);
      DeviceBuffer dw = upload_as<T>(randn(n, 2 + n, 0.5f), &w);
      DeviceBuffer dd = upload_as<T>(randn(m * n, 3 + n, 1.0f), &d);
      DeviceBuffer dy = poisoned(m * n * sizeof(T));
      const float eps = 1e-5f;
      if (fused) {
        add_rmsnorm<T>(ctx, dx.as<T>(), dd.as<T>(), m, n, dw.as<T>(), eps, dy.as<T>());
      } else {
        rmsnorm<T>(ctx, dx.as<T>(), m, n, dw.as<T>(), eps, dy.as<T>());
      }
      const std::vector<float> y = download_as_float<T>(dy, m * n);
      const std::vector<float> res = download_as_float<T>(dx, m * n);
      for (int64_t r = 0; r < m; ++r) {
        std::vector<double> h(n);
        double ss = 0;
        for (int64_t i = 0; i < n; ++i) {
          h[i] = x[r * n + i];
          if (fused) h[i] = round_t<T>(h[i] + d[r * n + i]);  // HF: residual + hidden, in T
          ss += h[i] * h[i];
        }
        const double inv = 1.0 / std::sqrt(ss / n + eps);
        for (int64_t i = 0; i < n; ++i) {
          if (fused) {
            ASSERT_EQ(res[r * n + i], static_cast<float>(h[i])) << "residual " << i;
          }
          const double ref = w[i] * round_t<T>(h[i] * inv);  // weight * hidden.to(T)
          ASSERT_NEAR(y[r * n + i], ref, tol<T>(std::fabs(ref)) + tol<T>(1e-3)) << "y " << i;
        }
      }
    }
  }
}

TEST_F(CudaTest, RmsNormMatchesHfFormula) {
  check_rmsnorm<float>(ctx(), false);
  check_rmsnorm<bf16>(ctx(), false);
}

TEST_F(CudaTest, AddRmsNormUpdatesResidualAndNormalizesIt) {
  check_rmsnorm<float>(ctx(), true);
  check_rmsnorm<bf16>(ctx(), true);
}

template <typename T>
void check_rope(KernelContext& ctx) {
  for (int64_t d : {6, 64, 128}) {
    for (double theta : {1e4, 1e6}) {
      const int64_t tokens = 9, heads = 3;
      SCOPED_TRACE(::testing::Message() << "head_dim=" << d << " theta=" << theta);
      std::vector<float> x;
      DeviceBuffer dx = upload_as<T>(randn(tokens * heads * d, 5 + d), &x);
      std::vector<int64_t> pos = {0, 1, 2, 17, 100, 4095, 4096, 32767, 131071};
      DeviceBuffer dpos = upload(pos);
      const std::vector<float> inv_freq = rope_inv_freq(d, theta);
      DeviceBuffer dinv = upload(inv_freq);
      rope<T>(ctx, dx.as<T>(), tokens, heads, d, dpos.as<int64_t>(), dinv.as<float>());
      const std::vector<float> y = download_as_float<T>(dx, tokens * heads * d);
      for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t h = 0; h < heads; ++h) {
          for (int64_t i = 0; i < d / 2; ++i) {
            // The angle in float32 as HF computes it (inv_freq @ position), then exact cos/sin.
            const float angle = static_cast<float>(pos[t]) * inv_freq[i];
            const double c = round_t<T>(std::cos(static_cast<double>(angle)));
            const double s = round_t<T>(std::sin(static_cast<double>(angle)));
            const int64_t base = (t * heads + h) * d;
            const double a = x[base + i], b = x[base + i + d / 2];
            const double ref0 = round_t<T>(a * c) - round_t<T>(b * s);
            const double ref1 = round_t<T>(b * c) + round_t<T>(a * s);
            // cosf/sinf are within 2 ulps: 3e-7 of |a| + |b| in float32; bf16 adds a step.
            const double scale = std::fabs(a) + std::fabs(b);
            const double bound = std::is_same_v<T, float> ? 4e-7 * scale : tol<T>(scale);
            ASSERT_NEAR(y[base + i], ref0, bound) << "t=" << t << " h=" << h << " i=" << i;
            ASSERT_NEAR(y[base + i + d / 2], ref1, bound) << "t=" << t << " h=" << h << " i=" << i;
            if (pos[t] == 0) {
              ASSERT_EQ(y[base + i], x[base + i]);  // position 0 is the identity
            }
          }
        }
      }
    }
  }
}

TEST_F(CudaTest, RopeMatchesHfRotateHalf) {
  check_rope<float>(ctx());
  check_rope<bf16>(ctx());
}

TEST(RopeInvFreqTest, MatchesTransformersFloat32Formula) {
  const std::vector<float> inv = rope_inv_freq(128, 1e6);
  ASSERT_EQ(inv.size(), 64u);
  EXPECT_EQ(inv[0], 1.0f);
  EXPECT_NEAR(inv[32], 1.0 / 1000.0, 1e-9);  // theta^(64/128) = 1000
  EXPECT_EQ(inv[5], 1.0f / std::pow(1e6f, 10.0f / 128.0f));
}

template <typename T>
void check_silu_add(KernelContext& ctx) {
  for (int64_t n : {1, 7, 4096, 100003}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    std::vector<float> g, u;
    DeviceBuffer dg = upload_as<T>(randn(n, 10 + n, 3.0f), &g);
    DeviceBuffer du = upload_as<T>(randn(n, 11 + n), &u);
    DeviceBuffer dout = poisoned(n * sizeof(T));
    silu_mul<T>(ctx, dg.as<T>(), du.as<T>(), dout.as<T>(), n);
    const std::vector<float> out = download_as_float<T>(dout, n);
    for (int64_t i = 0; i < n; ++i) {
      const double silu = round_t<T>(g[i] / (1.0 + std::exp(-double(g[i]))));  // act_fn(gate)
      const double ref = silu * u[i];
      ASSERT_NEAR(out[i], ref, tol<T>(std::fabs(ref)) + 1e-30) << i;
    }
    add<T>(ctx, dg.as<T>(), du.as<T>(), n);
    const std::vector<float> sum = download_as_float<T>(dg, n);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(sum[i], round_t<T>(static_cast<double>(g[i] + u[i]))) << i;  // one rounding
    }
  }
}

TEST_F(CudaTest, SiluMulAndAddMatchReference) {
  check_silu_add<float>(ctx());
  check_silu_add<bf16>(ctx());
}

TEST_F(CudaTest, EmbedCopiesRowsExactlyAndZerosBadIds) {
  // hidden 100 takes the element-by-element kernel, 128 and 4096 the 16-byte one.
  for (const int64_t hidden : {100, 128, 4096}) {
    SCOPED_TRACE("hidden " + std::to_string(hidden));
    const int64_t vocab = 37;
    std::vector<float> table;
    DeviceBuffer dt = upload(to_bf16(randn(vocab * hidden, 21), &table));
    const std::vector<int32_t> ids = {0, 36, 5, 5, -1, 37, 12};
    DeviceBuffer dids = upload(ids);
    DeviceBuffer outf = poisoned(ids.size() * hidden * sizeof(float));
    DeviceBuffer outb = poisoned(ids.size() * hidden * sizeof(bf16));
    embed<float>(ctx(), dt.as<bf16>(), vocab, hidden, dids.as<int32_t>(), ids.size(),
                 outf.as<float>());
    embed<bf16>(ctx(), dt.as<bf16>(), vocab, hidden, dids.as<int32_t>(), ids.size(),
                outb.as<bf16>());
    const std::vector<float> f = download<float>(outf, ids.size() * hidden);
    const std::vector<float> b = download_as_float<bf16>(outb, ids.size() * hidden);
    for (size_t r = 0; r < ids.size(); ++r) {
      const bool ok = ids[r] >= 0 && ids[r] < vocab;
      for (int64_t i = 0; i < hidden; ++i) {
        const float want = ok ? table[ids[r] * hidden + i] : 0.0f;
        ASSERT_EQ(f[r * hidden + i], want) << r << " " << i;
        ASSERT_EQ(b[r * hidden + i], want) << r << " " << i;
      }
    }
  }
}

}  // namespace
}  // namespace mistral::cuda::testing
