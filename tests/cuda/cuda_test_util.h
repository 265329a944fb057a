// Shared pieces of the CUDA kernel tests: a fixture that skips without a CUDA device, device
// buffers filled from and read back to host vectors, bf16/f16 conversions and the host-side
// quantizers that build int8/int4 weights in the formats of backend/cuda/kernels.h.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <type_traits>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/kernel_context.h"
#include "backend/cuda/kernels.h"
#include "core/half.h"
#include "random_values.h"

namespace mistral::cuda::testing {

// Skips (GTEST_SKIP) when no CUDA device is usable, so a CPU-only CI machine passes; otherwise
// creates a KernelContext on the default stream.
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
      (void)cudaGetLastError();
      GTEST_SKIP() << "no CUDA device ("
                   << (err != cudaSuccess ? cudaGetErrorString(err) : "0 devices")
                   << "): GPU test skipped";
    }
    auto ctx = KernelContext::create(nullptr);
    ASSERT_TRUE(ctx.ok()) << ctx.status().message();
    ctx_ = std::move(ctx).value();
  }
  void TearDown() override {
    if (ctx_ != nullptr) MISTRAL_CUDA_CHECK(cudaDeviceSynchronize());
  }

  KernelContext& ctx() { return *ctx_; }

  std::unique_ptr<KernelContext> ctx_;
};

inline DeviceBuffer alloc(size_t bytes) {
  auto r = DeviceBuffer::allocate(bytes, "test buffer");
  MISTRAL_CHECK(r.ok()) << r.status().message();
  return std::move(r).value();
}

template <typename T>
DeviceBuffer upload(const std::vector<T>& v) {
  DeviceBuffer b = alloc(std::max<size_t>(1, v.size() * sizeof(T)));
  if (!v.empty()) {
    MISTRAL_CUDA_CHECK(
        cudaMemcpy(b.data(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  return b;
}

template <typename T>
std::vector<T> download(const DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  MISTRAL_CUDA_CHECK(cudaDeviceSynchronize());
  if (n > 0)
    MISTRAL_CUDA_CHECK(cudaMemcpy(v.data(), b.data(), n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

// Host values of a float or bf16 device vector, as float.
template <typename T>
std::vector<float> download_as_float(const DeviceBuffer& b, size_t n) {
  if constexpr (std::is_same_v<T, float>) {
    return download<float>(b, n);
  } else {
    const std::vector<BF16> v = download<BF16>(b, n);
    std::vector<float> f(n);
    for (size_t i = 0; i < n; ++i) f[i] = bf16_to_float(v[i]);
    return f;
  }
}

// Output buffers start as all-ones bits: NaN in float, bf16 and f16, so an element a kernel fails
// to write cannot pass a comparison.
inline DeviceBuffer poisoned(size_t bytes) {
  DeviceBuffer b = alloc(bytes);
  MISTRAL_CUDA_CHECK(cudaMemset(b.data(), 0xff, bytes));
  return b;
}

using mistral::testing::randn;

// bf16 storage of `values` (round to nearest even); `rounded` receives the values it holds.
inline std::vector<BF16> to_bf16(const std::vector<float>& values, std::vector<float>* rounded) {
  std::vector<BF16> out(values.size());
  if (rounded != nullptr) rounded->resize(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    out[i] = float_to_bf16(values[i]);
    if (rounded != nullptr) (*rounded)[i] = bf16_to_float(out[i]);
  }
  return out;
}

inline float bf16_round(float v) { return bf16_to_float(float_to_bf16(v)); }

// A weight [n, k] in one of the formats, on the host and on the device, with the exact values it
// stands for (`dequant`, double) for references.
struct TestWeight {
  WeightFormat format;
  int64_t n, k;
  std::vector<uint8_t> data;
  std::vector<F16> scales;
  std::vector<double> dequant;
  DeviceBuffer d_data, d_scales;

  DeviceWeight device() const {
    DeviceWeight w;
    w.format = format;
    w.n = n;
    w.k = k;
    w.data = d_data.data();
    w.scales = static_cast<const __half*>(d_scales.data());
    return w;
  }
};

// Random N(0, 0.05) weights, quantized per group of 32 with an f16 scale max|w| / 127 (int8) or
// max|w| / 7 (int4, nibble = clamp(round(w / s), -8, 7) + 8), or rounded to bf16.
inline TestWeight make_weight(WeightFormat format, int64_t n, int64_t k, uint32_t seed) {
  TestWeight t;
  t.format = format;
  t.n = n;
  t.k = k;
  const std::vector<float> w = randn(static_cast<size_t>(n * k), seed, 0.05f);
  t.dequant.resize(w.size());
  if (format == WeightFormat::kBF16) {
    t.data.resize(w.size() * 2);
    for (size_t i = 0; i < w.size(); ++i) {
      const BF16 b = float_to_bf16(w[i]);
      std::memcpy(&t.data[2 * i], &b, 2);
      t.dequant[i] = bf16_to_float(b);
    }
  } else {
    const int64_t groups = k / 32;
    t.scales.resize(static_cast<size_t>(n * groups));
    t.data.assign(format == WeightFormat::kInt8 ? w.size() : w.size() / 2, 0);
    const float qmax = format == WeightFormat::kInt8 ? 127.0f : 7.0f;
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        float amax = 0.0f;
        for (int e = 0; e < 32; ++e) amax = std::max(amax, std::fabs(w[r * k + g * 32 + e]));
        const F16 s16 = float_to_f16(amax > 0 ? amax / qmax : 1.0f);
        t.scales[r * groups + g] = s16;
        const float s = f16_to_float(s16);
        for (int e = 0; e < 32; ++e) {
          const int64_t idx = r * k + g * 32 + e;
          const int lo = format == WeightFormat::kInt8 ? -128 : -8;
          const int hi = format == WeightFormat::kInt8 ? 127 : 7;
          const int q = std::clamp(static_cast<int>(std::lround(w[idx] / s)), lo, hi);
          t.dequant[idx] = static_cast<double>(s) * q;
          if (format == WeightFormat::kInt8) {
            t.data[idx] = static_cast<uint8_t>(static_cast<int8_t>(q));
          } else {
            // Byte j of the group: element j in the low nibble, element j + 16 in the high one.
            uint8_t& byte = t.data[(r * k + g * 32) / 2 + (e % 16)];
            const uint8_t nibble = static_cast<uint8_t>(q + 8);
            byte = e < 16 ? static_cast<uint8_t>((byte & 0xf0) | nibble)
                          : static_cast<uint8_t>((byte & 0x0f) | (nibble << 4));
          }
        }
      }
    }
    t.d_scales = upload(t.scales);
  }
  t.d_data = upload(t.data);
  return t;
}

}  // namespace mistral::cuda::testing
