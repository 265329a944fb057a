// Every CPU op in backend/cpu/ops.h against a plain scalar double-precision reference written
// here from the Hugging Face formulas, over odd shapes, both weight dtypes, every mask case and
// every KV cache storage type (checked on the values the cache holds, and bounded against F32).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_features.h"
#include "backend/cpu/ops.h"
#include "core/half.h"
#include "core/thread_pool.h"
#include "random_values.h"

namespace mistral {

// Names the cache dtype in GoogleTest's messages (found by argument-dependent lookup).
void PrintTo(DType dtype, std::ostream* os) { *os << dtype_name(dtype); }

namespace {

using testing::randn;

// More workers than cores, so that the kernels' uneven splits are exercised on any machine.
const bool kThreadsSet = (ThreadPool::set_default_threads(3), true);

// A weight tensor holding `values` (rounded to bf16 when asked); `widened` receives the values it
// really holds, as the reference must see them.
Tensor make_weight(const std::vector<float>& values, std::vector<int64_t> shape, DType dtype,
                   std::vector<double>* widened) {
  Tensor t = Tensor::allocate(dtype, std::move(shape));
  widened->resize(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kBF16) {
      static_cast<BF16*>(t.mutable_data())[i] = float_to_bf16(values[i]);
      (*widened)[i] = bf16_to_float(float_to_bf16(values[i]));
    } else {
      static_cast<float*>(t.mutable_data())[i] = values[i];
      (*widened)[i] = values[i];
    }
  }
  return t;
}

// Run with the hand-written AVX-512 kernels where the CPU has them, and with the portable ones.
// The contract (backend.h): F32 weights see the F32 activations; BF16 weights see the activations
// rounded to bf16 (round to nearest even), products summed in F32. The reference is exact (double)
// on those inputs; a kernel that kept F32 activations for BF16 weights misses it by ~2^-9 per term.
TEST(MatmulTest, MatchesScalarReferenceOverOddShapes) {
  ASSERT_TRUE(kThreadsSet);
  for (bool portable : {false, true}) {
    cpu::set_portable_kernels_only(portable);
    SCOPED_TRACE(portable ? "portable kernels" : cpu::cpu_kernel_level());
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      for (int64_t m : {1, 2, 3, 7, 33}) {
        for (int64_t n : {1, 3, 5, 17, 64}) {
          for (int64_t k : {1, 7, 16, 64, 100, 257, 2085}) {  // 2085: several k blocks
            SCOPED_TRACE(::testing::Message()
                         << dtype_name(dtype) << " m=" << m << " n=" << n << " k=" << k);
            const std::vector<float> x = randn(m * k, 1 + m * 7 + k);
            std::vector<double> xr(x.begin(), x.end());  // what the kernel multiplies
            if (dtype == DType::kBF16) {
              for (double& v : xr) v = bf16_to_float(float_to_bf16(static_cast<float>(v)));
            }
            std::vector<double> w;
            const Tensor wt = make_weight(randn(n * k, 2 + n * 13 + k), {n, k}, dtype, &w);
            std::vector<float> y(m * n + 1, 12345.0f);  // one sentinel past the end
            cpu::matmul(x.data(), m, wt, y.data());
            for (int64_t i = 0; i < m; ++i) {
              for (int64_t j = 0; j < n; ++j) {
                double ref = 0, mag = 0;
                for (int64_t p = 0; p < k; ++p) {
                  ref += xr[i * k + p] * w[j * k + p];
                  mag += std::fabs(xr[i * k + p] * w[j * k + p]);
                }
                ASSERT_NEAR(y[i * n + j], ref, 1e-5 * mag + 1e-30) << "y[" << i << "][" << j << "]";
              }
            }
            EXPECT_EQ(y[m * n], 12345.0f);
          }
        }
      }
    }
  }
  cpu::set_portable_kernels_only(false);
}

// Decode (m == 1) with BF16 weights splits each thread's rows into two halves read two rows at a
// time; row counts where the shares are odd, halves of one row, and rows of k values that end in
// a partial 64- or 32-value step.
TEST(MatmulTest, BF16DecodeOverUnevenRowSplits) {
  ASSERT_TRUE(kThreadsSet);
  for (int64_t n : {2, 31, 47, 601}) {
    for (int64_t k : {4096, 4128, 4103}) {
      SCOPED_TRACE(::testing::Message() << "n=" << n << " k=" << k);
      const std::vector<float> x = randn(k, 5 + n + k);
      std::vector<double> w;
      const Tensor wt = make_weight(randn(n * k, 6 + n + k), {n, k}, DType::kBF16, &w);
      std::vector<float> y(n + 1, 12345.0f);
      cpu::matmul(x.data(), 1, wt, y.data());
      for (int64_t j = 0; j < n; ++j) {
        double ref = 0, mag = 0;
        for (int64_t p = 0; p < k; ++p) {
          const double xp = bf16_to_float(float_to_bf16(x[p]));
          ref += xp * w[j * k + p];
          mag += std::fabs(xp * w[j * k + p]);
        }
        ASSERT_NEAR(y[j], ref, 1e-5 * mag + 1e-30) << "y[" << j << "]";
      }
      EXPECT_EQ(y[n], 12345.0f);
    }
  }
}

TEST(EmbedTest, CopiesRowsExactly) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    const int64_t vocab = 37, hidden = 19;
    const std::vector<float> values = randn(vocab * hidden, 5);
    Tensor table = Tensor::allocate(dtype, {vocab, hidden});
    std::vector<float> expect(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      if (dtype == DType::kF32)
        static_cast<float*>(table.mutable_data())[i] = expect[i] = values[i];
      if (dtype == DType::kBF16) {
        static_cast<BF16*>(table.mutable_data())[i] = float_to_bf16(values[i]);
        expect[i] = bf16_to_float(float_to_bf16(values[i]));
      }
      if (dtype == DType::kF16) {
        static_cast<F16*>(table.mutable_data())[i] = float_to_f16(values[i]);
        expect[i] = f16_to_float(float_to_f16(values[i]));
      }
    }
    const std::vector<int32_t> ids = {36, 0, 5, 5, 17, 0, 35};
    std::vector<float> out(ids.size() * hidden);
    cpu::embed(table, ids.data(), static_cast<int64_t>(ids.size()), out.data());
    for (size_t r = 0; r < ids.size(); ++r) {
      for (int64_t d = 0; d < hidden; ++d) {
        ASSERT_EQ(out[r * hidden + d], expect[ids[r] * hidden + d]) << dtype_name(dtype) << r;
      }
    }
  }
}

TEST(RmsNormTest, MatchesHfFormula) {
  for (int64_t n : {1, 7, 64, 257}) {
    for (int64_t m : {1, 5, 33}) {
      for (float eps : {1e-5f, 1e-6f}) {
        std::vector<float> x = randn(m * n, 3 + n + m);
        // Row scales from 1e-4 to 1e3: where eps matters and where it does not; one zero row.
        for (int64_t r = 0; r < m; ++r) {
          const float scale = r == 0 && m > 1 ? 0.0f : std::pow(10.0f, float(r % 8) - 4);
          for (int64_t i = 0; i < n; ++i) x[r * n + i] *= scale;
        }
        std::vector<float> wv = randn(n, 9, 0.5f);
        for (float& w : wv) w += 1.0f;
        std::vector<double> w;
        const Tensor wt = make_weight(wv, {n}, DType::kF32, &w);
        std::vector<float> y(m * n);
        cpu::rmsnorm(x.data(), m, wt, eps, y.data());
        for (int64_t r = 0; r < m; ++r) {
          double ms = 0;
          for (int64_t i = 0; i < n; ++i) ms += double(x[r * n + i]) * x[r * n + i];
          const double inv = 1.0 / std::sqrt(ms / n + double(eps));
          for (int64_t i = 0; i < n; ++i) {
            const double ref = w[i] * (x[r * n + i] * inv);
            ASSERT_NEAR(y[r * n + i], ref, 1e-5 * std::fabs(ref) + 1e-7)
                << "n=" << n << " m=" << m << " eps=" << eps << " row " << r << " i=" << i;
          }
        }
      }
    }
  }
}

// Hugging Face's rotary embedding in double: inv_freq_i = 1 / theta^(2i/d), angle = pos *
// inv_freq_i, out = x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1] over the halves.
std::vector<double> rope_reference(const std::vector<float>& x, int64_t tokens, int64_t heads,
                                   int64_t d, const std::vector<int64_t>& pos, double theta) {
  std::vector<double> out(x.size());
  const int64_t half = d / 2;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const float* v = x.data() + (t * heads + h) * d;
      double* o = out.data() + (t * heads + h) * d;
      for (int64_t j = 0; j < d; ++j) {
        const int64_t i = j % half;  // cos/sin are repeated over both halves
        const double angle = double(pos[t]) / std::pow(theta, double(2 * i) / double(d));
        const double rotated = j < half ? -double(v[j + half]) : double(v[j - half]);
        o[j] = v[j] * std::cos(angle) + rotated * std::sin(angle);
      }
    }
  }
  return out;
}

TEST(RopeTest, MatchesHfRotateHalf) {
  for (double theta : {1e4, 1e6}) {
    for (int64_t d : {2, 8, 64, 128}) {
      for (int64_t tokens : {1, 3, 17}) {
        const int64_t heads = 3;
        std::vector<int64_t> pos(tokens);
        std::mt19937 rng(static_cast<uint32_t>(d + tokens));
        for (int64_t t = 0; t < tokens; ++t) pos[t] = t == 0 ? 0 : rng() % 5001;  // up to 5000
        if (tokens > 2) pos[2] = 1;  // a padding token's position, as the model passes it
        std::vector<float> x = randn(tokens * heads * d, 17 + d);
        const std::vector<double> ref = rope_reference(x, tokens, heads, d, pos, theta);
        cpu::rope(x.data(), tokens, heads, d, pos.data(), theta);
        for (int64_t t = 0; t < tokens; ++t) {
          // HF itself computes the angle in float32, whose rounding grows with the position.
          const double tol = 2e-6 + 2.5e-7 * double(pos[t]);
          for (int64_t j = 0; j < heads * d; ++j) {
            const size_t idx = t * heads * d + j;
            ASSERT_NEAR(x[idx], ref[idx], tol * 4)
                << "theta=" << theta << " d=" << d << " pos=" << pos[t] << " j=" << j;
          }
        }
      }
    }
  }
}

TEST(RopeTest, TightAtSmallPositionsAndIdentityAtZero) {
  const int64_t d = 16, heads = 2, tokens = 10;
  std::vector<int64_t> pos(tokens);
  for (int64_t t = 0; t < tokens; ++t) pos[t] = t;
  std::vector<float> x = randn(tokens * heads * d, 23);
  const std::vector<float> original = x;
  const std::vector<double> ref = rope_reference(x, tokens, heads, d, pos, 1e4);
  cpu::rope(x.data(), tokens, heads, d, pos.data(), 1e4);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(x[i], ref[i], 4e-6) << i;
  for (int64_t j = 0; j < heads * d; ++j) EXPECT_EQ(x[j], original[j]);  // position 0
}

TEST(SiluMulTest, MatchesScalarReference) {
  std::vector<float> gate = randn(70001, 31, 4.0f), up = randn(70001, 32);
  for (float g : {0.0f, -0.0f, 20.0f, -20.0f, 88.0f, -88.0f, 100.0f, -100.0f, 1e-30f}) {
    gate.push_back(g);
    up.push_back(1.5f);
  }
  std::vector<float> out(gate.size());
  cpu::silu_mul(gate.data(), up.data(), out.data(), static_cast<int64_t>(gate.size()));
  for (size_t i = 0; i < gate.size(); ++i) {
    const double g = gate[i], ref = g / (1.0 + std::exp(-g)) * up[i];
    ASSERT_TRUE(std::isfinite(out[i])) << "gate " << g;
    ASSERT_NEAR(out[i], ref, 1e-6 * std::fabs(ref) + 1e-37) << "gate " << g << " up " << up[i];
  }
  // In place, as the model calls it.
  std::vector<float> g2 = {1.0f, -2.0f, 3.0f};
  const std::vector<float> u2 = {2.0f, 2.0f, -1.0f};
  cpu::silu_mul(g2.data(), u2.data(), g2.data(), 3);
  EXPECT_NEAR(g2[0], 2.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(g2[1], -4.0 / (1.0 + std::exp(2.0)), 1e-6);
  EXPECT_NEAR(g2[2], -3.0 / (1.0 + std::exp(-3.0)), 1e-6);
}

TEST(ElementwiseTest, AddDotAndRowConversion) {
  std::vector<float> x = randn(1001, 41), y = randn(1001, 42);
  std::vector<float> sum = x;
  cpu::add(sum.data(), y.data(), 1001);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(sum[i], x[i] + y[i]);
  for (int64_t n : {0, 1, 15, 16, 17, 1001}) {
    double ref = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i) {
      ref += double(x[i]) * y[i];
      mag += std::fabs(double(x[i]) * y[i]);
    }
    EXPECT_NEAR(cpu::dot_f32(x.data(), y.data(), n), ref, 1e-6 * mag + 1e-30) << n;
  }
  std::vector<uint16_t> bf(257), h(257);
  for (size_t i = 0; i < bf.size(); ++i) {
    bf[i] = float_to_bf16(x[i]).bits;
    h[i] = float_to_f16(x[i]).bits;
  }
  std::vector<float> out(257);
  cpu::row_to_f32(bf.data(), DType::kBF16, 257, out.data());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], bf16_to_float(BF16{bf[i]}));
  cpu::row_to_f32(h.data(), DType::kF16, 257, out.data());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], f16_to_float(F16{h[i]}));
  cpu::row_to_f32(x.data(), DType::kF32, 257, out.data());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], x[i]);
}

// Limits the CPU kernels to the portable ones while in scope (false: whatever the CPU allows).
class PortableKernelsOnly {
 public:
  explicit PortableKernelsOnly(bool portable) { cpu::set_portable_kernels_only(portable); }
  ~PortableKernelsOnly() { cpu::set_portable_kernels_only(false); }
};

// ---- attention ----------------------------------------------------------------------------

// Stores one vector as a KV cache of `dtype` holds it (BF16/F16 rounded to nearest even; I8 as
// q = round(x / s) with s = max|x| / 127, written here independently of KvCache) into element
// `index` of `out` (and `scales`), and returns the values that storage holds, which is what the
// kernel must compute with.
std::vector<float> store_vector(const float* x, int64_t n, DType dtype, void* out, float* scales,
                                int64_t index) {
  std::vector<float> held(n);
  switch (dtype) {
    case DType::kF32:
      std::copy_n(x, n, static_cast<float*>(out) + index * n);
      std::copy_n(x, n, held.data());
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const BF16 v = float_to_bf16(x[i]);
        static_cast<BF16*>(out)[index * n + i] = v;
        held[i] = bf16_to_float(v);
      }
      break;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        const F16 v = float_to_f16(x[i]);
        static_cast<F16*>(out)[index * n + i] = v;
        held[i] = f16_to_float(v);
      }
      break;
    case DType::kI8: {
      double absmax = 0;
      for (int64_t i = 0; i < n; ++i) absmax = std::max(absmax, std::fabs(double(x[i])));
      const float s = static_cast<float>(absmax / 127);
      scales[index] = s;
      for (int64_t i = 0; i < n; ++i) {
        const long q = s > 0 ? std::lround(x[i] / s) : 0;
        static_cast<int8_t*>(out)[index * n + i] = static_cast<int8_t>(q);
        held[i] = static_cast<float>(q) * s;
      }
      break;
    }
    default:
      ADD_FAILURE() << "no such cache dtype";
  }
  return held;
}

// One attention problem stated in full: every key and value of every sequence index
// [0, history + T) with its validity, from which both the kernel's arguments (a ring cache of the
// last `capacity` history entries, stored as cache_dtype, plus this call's F32 tokens) and the
// naive reference are built.
struct AttentionCase {
  int64_t batch = 2, heads = 4, kv_heads = 2, head_dim = 8;
  int64_t history = 0;  // tokens already in the cache (the first new token's sequence index)
  int64_t tokens = 5;   // T
  int64_t window = 0;
  int64_t capacity = 0;  // ring size; 0: history + tokens
  float scale = 0;       // 0: 1/sqrt(head_dim)
  uint32_t seed = 1;
  std::vector<uint8_t> valid;  // [B, history + T]; empty: all valid
  DType cache_dtype = DType::kF32;
};

struct AttentionOutcome {
  int64_t empty_rows = 0;       // (query, head) rows that had no visible key
  double max_error_vs_f32 = 0;  // max |out - exact attention over the unrounded keys and values|
};

// Exact attention in double over the full [L] key range with Hugging Face's mask; rows with no
// visible key are NaN.
std::vector<double> attention_reference(const AttentionCase& c, const std::vector<float>& q,
                                        const std::vector<float>& keys,
                                        const std::vector<float>& vals, float scale) {
  const int64_t L = c.history + c.tokens, hd = c.head_dim, kvs = c.kv_heads * hd;
  const int64_t group = c.heads / c.kv_heads;
  std::vector<double> out(c.batch * c.tokens * c.heads * hd, NAN);
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t t = 0; t < c.tokens; ++t) {
      const int64_t qi = c.history + t;
      for (int64_t h = 0; h < c.heads; ++h) {
        const float* qv = &q[((b * c.tokens + t) * c.heads + h) * hd];
        const int64_t kh = h / group;
        std::vector<double> score(L, -INFINITY);
        double mx = -INFINITY;
        for (int64_t s = 0; s < L; ++s) {
          const bool visible =
              c.valid[b * L + s] && s <= qi && (c.window <= 0 || qi - s < c.window);
          if (!visible) continue;
          double dot = 0;
          for (int64_t e = 0; e < hd; ++e)
            dot += double(qv[e]) * keys[(b * L + s) * kvs + kh * hd + e];
          score[s] = dot * scale;
          mx = std::max(mx, score[s]);
        }
        if (mx == -INFINITY) continue;
        double z = 0;
        for (int64_t s = 0; s < L; ++s) z += std::exp(score[s] - mx);
        double* o = &out[((b * c.tokens + t) * c.heads + h) * hd];
        for (int64_t e = 0; e < hd; ++e) {
          o[e] = 0;
          for (int64_t s = 0; s < L; ++s) {
            o[e] += std::exp(score[s] - mx) / z * vals[(b * L + s) * kvs + kh * hd + e];
          }
        }
      }
    }
  }
  return out;
}

// The largest difference from an F32 cache that attention over a cache of `dtype` may show in
// these tests (random unit-normal q, k, v; outputs of magnitude ~1). Measured maxima over every
// case below: BF16 7.5e-3, F16 1.2e-3, I8 1.1e-2 (F32: 4e-7, float rounding only).
double error_bound_vs_f32(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return 1.2e-2;
    case DType::kF16:
      return 2e-3;
    case DType::kI8:
      return 2e-2;
    default:
      return 2e-5;
  }
}

// Runs the kernel on the case and checks it tightly against the reference computed on the values
// the cache really holds, and loosely (error_bound_vs_f32) against the unrounded ones.
AttentionOutcome run_attention_case(AttentionCase c) {
  AttentionOutcome outcome;
  const int64_t L = c.history + c.tokens, hd = c.head_dim;
  const int64_t kvs = c.kv_heads * hd, qs = c.heads * hd;
  const int64_t cap = c.capacity ? c.capacity : std::max<int64_t>(L, 1);
  const float scale = c.scale ? c.scale : 1.0f / std::sqrt(float(hd));
  if (c.valid.empty()) c.valid.assign(c.batch * L, 1);
  EXPECT_EQ(int64_t(c.valid.size()), c.batch * L);
  if (int64_t(c.valid.size()) != c.batch * L) return outcome;
  std::vector<float> keys = randn(c.batch * L * kvs, c.seed),
                     vals = randn(c.batch * L * kvs, c.seed + 1);
  const std::vector<float> q = randn(c.batch * c.tokens * qs, c.seed + 2);
  // Masked keys get huge values, so that any leak shows.
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t s = 0; s < L; ++s) {
      if (c.valid[b * L + s]) continue;
      for (int64_t e = 0; e < kvs; ++e) {
        keys[(b * L + s) * kvs + e] = 30.0f;
        vals[(b * L + s) * kvs + e] = 1000.0f;
      }
    }
  }
  // Ring cache: slot s holds the latest history index congruent to s; stale slots keep garbage.
  // `held_*` are keys/values as the cache holds them (history entries rounded to cache_dtype).
  Tensor kc = Tensor::allocate(c.cache_dtype, {c.batch, cap, c.kv_heads, hd});
  Tensor vc = Tensor::allocate(c.cache_dtype, {c.batch, cap, c.kv_heads, hd});
  std::vector<float> k_scale(c.batch * cap * c.kv_heads), v_scale(k_scale.size());
  const std::vector<float> k_garbage(hd, 500.0f), v_garbage(hd, -700.0f);
  for (int64_t vec = 0; vec < c.batch * cap * c.kv_heads; ++vec) {
    store_vector(k_garbage.data(), hd, c.cache_dtype, kc.mutable_data(), k_scale.data(), vec);
    store_vector(v_garbage.data(), hd, c.cache_dtype, vc.mutable_data(), v_scale.data(), vec);
  }
  std::vector<float> held_keys = keys, held_vals = vals;
  std::vector<int64_t> slot_seq(cap, -1);
  std::vector<uint8_t> slot_valid(c.batch * cap, 1);  // empty slots claim valid: must not matter
  for (int64_t s = 0; s < c.history; ++s) {
    const int64_t slot = s % cap;
    const bool in_ring = s >= c.history - cap;
    if (in_ring) slot_seq[slot] = s;
    for (int64_t b = 0; b < c.batch; ++b) {
      if (in_ring) slot_valid[b * cap + slot] = c.valid[b * L + s];
      for (int64_t h = 0; h < c.kv_heads; ++h) {
        const int64_t e = (b * L + s) * kvs + h * hd;
        // A key that fell out of the ring is stored in a scratch slot: it is never visible, but
        // the reference sees it rounded like the rest.
        Tensor scratch = Tensor::allocate(c.cache_dtype, {1, hd});
        float scratch_scale = 0;
        const int64_t vec = (b * cap + slot) * c.kv_heads + h;
        const std::vector<float> hk =
            in_ring
                ? store_vector(&keys[e], hd, c.cache_dtype, kc.mutable_data(), k_scale.data(), vec)
                : store_vector(&keys[e], hd, c.cache_dtype, scratch.mutable_data(), &scratch_scale,
                               0);
        const std::vector<float> hv =
            in_ring
                ? store_vector(&vals[e], hd, c.cache_dtype, vc.mutable_data(), v_scale.data(), vec)
                : store_vector(&vals[e], hd, c.cache_dtype, scratch.mutable_data(), &scratch_scale,
                               0);
        std::copy(hk.begin(), hk.end(), &held_keys[e]);
        std::copy(hv.begin(), hv.end(), &held_vals[e]);
      }
    }
  }
  std::vector<float> k_new(c.batch * c.tokens * kvs), v_new(k_new.size());
  std::vector<uint8_t> new_valid(c.batch * c.tokens);
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t t = 0; t < c.tokens; ++t) {
      const int64_t s = c.history + t;
      new_valid[b * c.tokens + t] = c.valid[b * L + s];
      std::copy_n(&keys[(b * L + s) * kvs], kvs, &k_new[(b * c.tokens + t) * kvs]);
      std::copy_n(&vals[(b * L + s) * kvs], kvs, &v_new[(b * c.tokens + t) * kvs]);
    }
  }
  AttentionArgs a;
  a.batch = c.batch;
  a.new_tokens = c.tokens;
  a.num_heads = c.heads;
  a.num_kv_heads = c.kv_heads;
  a.head_dim = hd;
  a.first_seq_index = c.history;
  a.sliding_window = c.window;
  a.scale = scale;
  a.q = q.data();
  a.k = k_new.data();
  a.v = v_new.data();
  a.new_valid = new_valid.data();
  a.capacity = cap;
  a.cache_dtype = c.cache_dtype;
  a.k_cache = kc.data;
  a.v_cache = vc.data;
  if (c.cache_dtype == DType::kI8) {
    a.k_scale = k_scale.data();
    a.v_scale = v_scale.data();
  }
  a.slot_seq_index = slot_seq.data();
  a.slot_valid = slot_valid.data();
  const std::vector<double> ref = attention_reference(c, q, held_keys, held_vals, scale);
  const std::vector<double> exact = attention_reference(c, q, keys, vals, scale);
  // The hand-written row kernels (where this CPU has AVX-512), then the portable ones.
  for (bool portable : {false, true}) {
    std::vector<float> out(c.batch * c.tokens * qs, 777.0f);
    a.out = out.data();
    {
      const PortableKernelsOnly scope(portable);
      cpu::attention(a);
    }
    outcome = AttentionOutcome{};
    for (size_t i = 0; i < out.size(); ++i) {
      const int64_t e = static_cast<int64_t>(i) % hd, row = static_cast<int64_t>(i) / hd;
      if (std::isnan(ref[i])) {
        if (e == 0) ++outcome.empty_rows;
        if (out[i] != 0.0f) {
          ADD_FAILURE() << "row " << row << " has no visible key but output " << out[i];
          return outcome;
        }
        continue;
      }
      if (std::fabs(out[i] - ref[i]) > 2e-5 * (1 + std::fabs(ref[i]))) {
        ADD_FAILURE() << dtype_name(c.cache_dtype) << (portable ? " portable" : "")
                      << " (b, t, h) row " << row << " e=" << e << ": got " << out[i]
                      << ", reference on the cached values " << ref[i];
        return outcome;
      }
      outcome.max_error_vs_f32 = std::max(outcome.max_error_vs_f32, std::fabs(out[i] - exact[i]));
    }
    EXPECT_LE(outcome.max_error_vs_f32, error_bound_vs_f32(c.cache_dtype))
        << dtype_name(c.cache_dtype) << (portable ? " portable" : "")
        << " cache vs unrounded keys and values";
  }
  return outcome;
}

// Every attention case runs with the cache in each storage type.
class AttentionTest : public ::testing::TestWithParam<DType> {
 protected:
  AttentionCase make_case() const {
    AttentionCase c;
    c.cache_dtype = GetParam();
    return c;
  }
};

TEST_P(AttentionTest, EmptyCacheCausal) {
  for (int64_t group : {1, 2, 4}) {
    for (int64_t tokens : {1, 2, 7, 13}) {
      SCOPED_TRACE(::testing::Message() << "group=" << group << " T=" << tokens);
      AttentionCase c = make_case();
      c.kv_heads = 2;
      c.heads = 2 * group;
      c.tokens = tokens;
      c.seed = static_cast<uint32_t>(group * 100 + tokens);
      run_attention_case(c);
    }
  }
}

TEST_P(AttentionTest, SlidingWindowInsideOneCall) {
  for (int64_t window : {1, 2, 3, 4, 6}) {
    SCOPED_TRACE(::testing::Message() << "window=" << window);
    AttentionCase c = make_case();
    c.tokens = 11;
    c.window = window;
    c.heads = 8;
    c.kv_heads = 2;
    run_attention_case(c);
  }
}

TEST_P(AttentionTest, LeftPaddingAndHoles) {
  AttentionCase c = make_case();
  c.batch = 3;
  c.tokens = 9;
  c.head_dim = 6;
  c.valid = {0, 0, 0, 1, 1, 1, 1, 1, 1,   // left padding
             1, 1, 1, 1, 1, 1, 1, 1, 1,   // none
             0, 1, 0, 1, 1, 0, 0, 1, 1};  // holes
  EXPECT_EQ(run_attention_case(c).empty_rows,
            (3 + 1) * c.heads);  // leading padding queries see nothing
  c.window = 3;
  run_attention_case(c);
  c.scale = 0.3f;
  run_attention_case(c);
}

TEST_P(AttentionTest, PartiallyFilledCache) {
  for (int64_t group : {1, 2, 4}) {
    for (int64_t tokens : {1, 3}) {
      SCOPED_TRACE(::testing::Message() << "group=" << group << " T=" << tokens);
      AttentionCase c = make_case();
      c.kv_heads = 1;
      c.heads = group;
      c.head_dim = 16;
      c.history = 6;
      c.tokens = tokens;
      c.capacity = 32;  // 6 of 32 slots filled
      c.valid.assign(c.batch * (c.history + tokens), 1);
      c.valid[0] = c.valid[1] = 0;  // row 0 was left-padded in an earlier call
      run_attention_case(c);
    }
  }
}

TEST_P(AttentionTest, WrappedRingCacheWithSlidingWindow) {
  // capacity == window, as KvCache makes it: the ring has wrapped, its slots are out of order,
  // and keys that fell out of it are outside every query's window.
  for (int64_t window : {3, 4, 7}) {
    for (int64_t tokens : {1, 2, 5, 9}) {
      for (int64_t history : {5, 10, 23}) {
        SCOPED_TRACE(::testing::Message()
                     << "W=" << window << " T=" << tokens << " hist=" << history);
        AttentionCase c = make_case();
        c.window = window;
        c.capacity = window;
        c.history = history;
        c.tokens = tokens;
        c.heads = 4;
        c.kv_heads = 2;
        const int64_t L = history + tokens;
        c.valid.assign(c.batch * L, 1);
        for (int64_t s = 0; s < 4; ++s) c.valid[L + s] = 0;  // row 1 left-padded
        c.valid[history - 1] = 0;  // row 0: a padding key inside the window
        c.seed = static_cast<uint32_t>(window * 1000 + tokens * 100 + history);
        run_attention_case(c);
      }
    }
  }
}

TEST_P(AttentionTest, QueriesWithNoVisibleKeyGiveZeros) {
  // Row 1 is padding throughout history and this call, and row 0's first new tokens are padding
  // after an all-padding history: those queries see nothing and must come out as zeros, not NaN.
  AttentionCase c = make_case();
  c.history = 3;
  c.tokens = 4;
  c.capacity = 8;
  c.valid = {0, 0, 0, 0, 0, 1, 1,  //
             0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(run_attention_case(c).empty_rows, (2 + 4) * c.heads);
  c.window = 2;
  c.valid = {1, 0, 0, 0, 0, 1, 1,  // key 0 is real but outside the window of the padding queries
             0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(run_attention_case(c).empty_rows, (2 + 4) * c.heads);
}

// A decode step and a short chunk at Mistral-7B's head size over a few hundred cached tokens:
// the error a narrower cache adds, printed so that it can be read against the bounds.
TEST_P(AttentionTest, ModelShapedDecodeStaysNearTheF32Cache) {
  for (int64_t tokens : {1, 4}) {
    AttentionCase c = make_case();
    c.batch = 1;
    c.heads = 8;
    c.kv_heads = 2;
    c.head_dim = 128;
    c.history = 300;
    c.capacity = 512;
    c.tokens = tokens;
    c.seed = 99;
    const AttentionOutcome o = run_attention_case(c);
    std::printf("[ measured ] %s cache, T=%lld: max |out - F32 cache out| = %.3g\n",
                std::string(dtype_name(c.cache_dtype)).c_str(), static_cast<long long>(tokens),
                o.max_error_vs_f32);
  }
}

INSTANTIATE_TEST_SUITE_P(CacheDTypes, AttentionTest,
                         ::testing::Values(DType::kF32, DType::kBF16, DType::kF16, DType::kI8),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(dtype_name(info.param));
                         });

// row_dot / row_axpy (hand-written AVX-512 where the CPU has it, and the portable loops that other
// machines run) against
// double sums over the values each storage type holds, at lengths around the vector widths;
// row_axpy must round each product before adding (so an F32 cache gives what a plain loop
// gives), and row_dot of an F32 row is dot_f32.
TEST(RowKernelsTest, DotAndAxpyInEveryStorageType) {
  std::mt19937 rng(5);
  for (bool portable : {false, true}) {
    const PortableKernelsOnly scope(portable);
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16, DType::kI8}) {
      for (int64_t n : {0, 1, 7, 15, 16, 17, 33, 128, 257}) {
        SCOPED_TRACE(::testing::Message()
                     << dtype_name(dtype) << " n=" << n << (portable ? " portable" : ""));
        const std::vector<float> x = randn(n, 60 + n), y0 = randn(n, 61 + n);
        std::vector<uint8_t> row(std::max<int64_t>(n, 1) * dtype_size(dtype));
        std::vector<double> held(n);
        const std::vector<float> src = randn(n, 62 + n, 3.0f);
        for (int64_t i = 0; i < n; ++i) {
          if (dtype == DType::kF32) {
            std::memcpy(&row[i * 4], &src[i], 4);
            held[i] = src[i];
          } else if (dtype == DType::kBF16) {
            const BF16 v = float_to_bf16(src[i]);
            std::memcpy(&row[i * 2], &v, 2);
            held[i] = bf16_to_float(v);
          } else if (dtype == DType::kF16) {
            // Any finite pattern, subnormals included: the vectorized widening must get them all.
            uint16_t bits;
            do bits = static_cast<uint16_t>(rng());
            while ((bits & 0x7c00u) == 0x7c00u);
            std::memcpy(&row[i * 2], &bits, 2);
            held[i] = f16_to_float(F16{bits});
          } else {
            const int8_t v = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
            row[i] = static_cast<uint8_t>(v);
            held[i] = v;
          }
        }
        double ref = 0, mag = 0;
        for (int64_t i = 0; i < n; ++i) {
          ref += double(x[i]) * held[i];
          mag += std::fabs(double(x[i]) * held[i]);
        }
        const float dot = cpu::row_dot(x.data(), row.data(), dtype, n);
        EXPECT_NEAR(dot, ref, 1e-6 * mag + 1e-30);
        if (dtype == DType::kF32) {
          EXPECT_EQ(dot, cpu::dot_f32(x.data(), reinterpret_cast<const float*>(row.data()), n));
        }
        const float a = -0.37f;
        std::vector<float> y = y0;
        y.push_back(4242.0f);  // sentinel
        cpu::row_axpy(a, row.data(), dtype, n, y.data());
        for (int64_t i = 0; i < n; ++i) {
          volatile float product =
              a * static_cast<float>(held[i]);  // volatile: no fused multiply-add
          const float expect = y0[i] + product;
          ASSERT_EQ(y[i], expect) << "i=" << i;
        }
        EXPECT_EQ(y[n], 4242.0f);
      }
    }
  }
}

TEST(BackendTest, CpuBackendDelegatesToTheKernels) {
  std::unique_ptr<Backend> be = make_cpu_backend();
  EXPECT_EQ(be->name(), "cpu");
  EXPECT_TRUE(be->supports_weight_dtype(DType::kF32));
  EXPECT_TRUE(be->supports_weight_dtype(DType::kBF16));
  EXPECT_FALSE(be->supports_weight_dtype(DType::kF16));
  EXPECT_FALSE(be->supports_weight_dtype(DType::kI32));
  std::vector<float> x = randn(3 * 2 * 8, 77), y = x;
  const std::vector<int64_t> pos = {4, 0, 900};
  be->rope(x.data(), 3, 2, 8, pos.data(), 1e6);
  cpu::rope(y.data(), 3, 2, 8, pos.data(), 1e6);
  EXPECT_EQ(x, y);
  std::vector<double> w;
  const Tensor wt = make_weight(randn(5 * 8, 78), {5, 8}, DType::kBF16, &w);
  std::vector<float> o1(6 * 5), o2(6 * 5);  // x read as 6 rows of 8
  be->matmul(x.data(), 6, wt, o1.data());
  cpu::matmul(x.data(), 6, wt, o2.data());
  EXPECT_EQ(o1, o2);
}

}  // namespace
}  // namespace mistral
