// gemv_fused (one row of x with the norm, residual add or SwiGLU in the GEMV's kernel) against
// the separate kernels it replaces: rmsnorm, gemv with m = 1 (which quantizes x in a kernel of its
// own for int8 / int4 weights), add and silu_mul. The fused kernel promises the same bits, so the
// comparison is exact; the separate kernels are checked against references in linear_test.cc and
// elementwise_test.cc.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cuda_test_util.h"

namespace mistral::cuda::testing {
namespace {

const WeightFormat kFormats[] = {WeightFormat::kBF16, WeightFormat::kInt8, WeightFormat::kInt4};

std::vector<uint16_t> bits(const std::vector<BF16>& v) {
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = v[i].bits;
  return b;
}

TEST_F(CudaTest, FusedGemvGivesTheBitsOfTheSeparateOps) {
  ASSERT_TRUE(ctx().reserve_scratch(size_t{64} << 20).ok());
  struct Shape {
    int64_t n, k;
  };
  // n: a block's rows (bf16: 8, or 4 SwiGLU outputs; int8 / int4: 16, or 8 SwiGLU outputs)
  // partly past the end, an odd n, and Mistral-7B's widths; then more row groups than the GPU
  // holds blocks at once (at most 8 of 256 threads per SM), so that the int8 / int4 grid's blocks
  // take several groups each, the last one partly past the end.
  const int64_t looping = int64_t{8} * 16 * ctx().num_sms() + 12;
  const Shape shapes[] = {{20, 96}, {6, 1024}, {7, 1024}, {36, 4096}, {64, 14336}, {looping, 96}};
  const float eps = 1e-5f;
  uint32_t seed = 300;
  for (WeightFormat f : kFormats) {
    for (const Shape& s : shapes) {
      const TestWeight w = make_weight(f, s.n, s.k, seed++);
      // x at the scale of a residual stream, so the norm matters.
      std::vector<float> xv = randn(s.k, seed++, 3.0f), held;
      const DeviceBuffer x = upload(to_bf16(xv, &held));
      std::vector<float> nv = randn(s.k, seed++, 0.3f);
      for (float& v : nv) v += 1.0f;
      const DeviceBuffer norm = upload(to_bf16(nv, &held));
      const std::vector<BF16> y0 = to_bf16(randn(s.n, seed++), &held);
      const auto* xp = x.as<const bf16>();
      const auto* np = norm.as<const bf16>();
      for (bool with_norm : {false, true}) {
        for (GemvOutput out : {GemvOutput::kStore, GemvOutput::kAddTo, GemvOutput::kSwiGLU}) {
          if (out == GemvOutput::kSwiGLU && s.n % 2 != 0) continue;  // gate and up halves
          const std::string what = std::string(weight_format_name(f)) +
                                   " n=" + std::to_string(s.n) + " k=" + std::to_string(s.k) +
                                   (with_norm ? " norm" : "") + " output " +
                                   std::to_string(static_cast<int>(out));
          GemvFusion fusion;
          fusion.norm = with_norm ? np : nullptr;
          fusion.eps = eps;
          fusion.output = out;
          ASSERT_TRUE(gemv_fused_supported(w.device(), fusion)) << what;
          const int64_t outputs = out == GemvOutput::kSwiGLU ? s.n / 2 : s.n;
          // The separate ops.
          DeviceBuffer h = poisoned(s.k * sizeof(bf16));
          const bf16* input = xp;
          if (with_norm) {
            rmsnorm<bf16>(ctx(), xp, 1, s.k, np, eps, h.as<bf16>());
            input = h.as<const bf16>();
          }
          DeviceBuffer product = poisoned(s.n * sizeof(bf16));
          gemv(ctx(), input, 1, w.device(), product.as<bf16>());
          DeviceBuffer want = out == GemvOutput::kAddTo ? upload(y0) : poisoned(s.n * sizeof(bf16));
          if (out == GemvOutput::kStore) {
            MISTRAL_CUDA_CHECK(cudaMemcpy(want.data(), product.data(), s.n * sizeof(bf16),
                                          cudaMemcpyDeviceToDevice));
          } else if (out == GemvOutput::kAddTo) {
            add<bf16>(ctx(), want.as<bf16>(), product.as<const bf16>(), s.n);
          } else {
            silu_mul<bf16>(ctx(), product.as<const bf16>(), product.as<const bf16>() + s.n / 2,
                           want.as<bf16>(), s.n / 2);
          }
          // Fused.
          DeviceBuffer got = out == GemvOutput::kAddTo ? upload(y0) : poisoned(s.n * sizeof(bf16));
          gemv_fused(ctx(), xp, w.device(), fusion, got.as<bf16>());
          ASSERT_EQ(bits(download<BF16>(got, outputs)), bits(download<BF16>(want, outputs)))
              << what;
          if (out == GemvOutput::kStore) {  // float output: the unrounded sums
            DeviceBuffer want_f = poisoned(s.n * sizeof(float));
            gemv(ctx(), input, 1, w.device(), want_f.as<float>());
            DeviceBuffer got_f = poisoned(s.n * sizeof(float));
            gemv_fused(ctx(), xp, w.device(), fusion, got_f.as<float>());
            ASSERT_EQ(download<float>(got_f, s.n), download<float>(want_f, s.n)) << what;
          }
        }
      }
    }
  }
}

TEST_F(CudaTest, FusedGemvSaysWhatItCannotTake) {
  DeviceWeight w;
  w.format = WeightFormat::kBF16;
  w.n = 64;
  w.k = 24576;
  w.data = reinterpret_cast<const void*>(256);  // never read
  GemvFusion norm;
  norm.norm = reinterpret_cast<const bf16*>(256);
  EXPECT_TRUE(gemv_fused_supported(w, norm));
  w.k = 24576 + 8;  // the normed x no longer fits in shared memory
  EXPECT_FALSE(gemv_fused_supported(w, norm));
  EXPECT_TRUE(gemv_fused_supported(w, GemvFusion()));  // read from global memory
  GemvFusion swiglu;
  swiglu.output = GemvOutput::kSwiGLU;
  w.n = 63;
  EXPECT_FALSE(gemv_fused_supported(w, swiglu));
  w.format = WeightFormat::kInt8;
  w.n = 64;
  w.k = 96;
  EXPECT_FALSE(gemv_fused_supported(w, GemvFusion())) << "no scales";
  w.scales = reinterpret_cast<const __half*>(256);
  EXPECT_TRUE(gemv_fused_supported(w, GemvFusion()));
  w.k = 100;
  EXPECT_FALSE(gemv_fused_supported(w, GemvFusion())) << "k not a multiple of 32";
  w.k = 39296;
  EXPECT_TRUE(gemv_fused_supported(w, GemvFusion()));
  w.k = 39296 + 32;
  EXPECT_FALSE(gemv_fused_supported(w, GemvFusion()));
}

}  // namespace
}  // namespace mistral::cuda::testing
