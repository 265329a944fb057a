// gemv_bench: achieved memory bandwidth of the decode GEMV for the Mistral-7B shapes in bf16, int8
// and int4, next to a device-to-device copy measured in the same run and cuBLASLt on the same bf16
// shapes; then the prefill GEMM (cuBLASLt) at M = 512 in TFLOP/s.
//
// Timing: cudaEvents around a batch of launches, after warm-up; the median of the samples. The
// weights rotate over enough copies to span >= 256 MiB, so consecutive launches cannot be served
// from the 50 MB L2. Bytes counted: weights + scales + x + y, each once.
//
// Usage: gemv_bench [--samples N] [--peak-gbs G] [--mixed-only]
//   G: the bandwidth the fractions are of (3350); --mixed-only: the copy baselines and the
//   mixed-input GEMM table alone.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/kernel_context.h"
#include "backend/cuda/kernels.h"

namespace mistral::cuda {
namespace {

// Random, finite data: bf16 and f16 in [-1, 1) (f16 scales in [2^-10, 2^-9)), bytes uniform.
enum class Fill { kBytes, kBf16, kF16Scale };

__global__ void fill_kernel(uint8_t* p, size_t bytes, uint64_t seed, Fill kind) {
  for (size_t i = (size_t(blockIdx.x) * blockDim.x + threadIdx.x) * 2; i < bytes;
       i += size_t(gridDim.x) * blockDim.x * 2) {
    uint64_t z = seed + i * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    uint16_t v = static_cast<uint16_t>(z);
    if (kind == Fill::kBf16) {
      v = __bfloat16_as_ushort(__float2bfloat16(static_cast<float>(z >> 40) * 0x1p-23f - 1.0f));
    } else if (kind == Fill::kF16Scale) {
      v = __half_as_ushort(
          __float2half(0x1p-10f * (1.0f + static_cast<float>(z >> 40) * 0x1p-24f)));
    }
    p[i] = static_cast<uint8_t>(v);
    if (i + 1 < bytes) p[i + 1] = static_cast<uint8_t>(v >> 8);
  }
}

// Reads n 16-byte words once (grid-stride, 4 loads in flight per thread); the XOR of what each
// thread read goes to sink, so the loads cannot be dropped.
__global__ void read_kernel(const uint4* __restrict__ p, size_t n, uint4* sink) {
  uint4 acc = make_uint4(0, 0, 0, 0);
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = __ldcs(p + i + u * stride);
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      acc.x ^= v[u].x;
      acc.y ^= v[u].y;
      acc.z ^= v[u].z;
      acc.w ^= v[u].w;
    }
  }
  for (; i < n; i += stride) {
    const uint4 v = __ldcs(p + i);
    acc.x ^= v.x;
    acc.y ^= v.y;
    acc.z ^= v.z;
    acc.w ^= v.w;
  }
  sink[size_t(blockIdx.x) * blockDim.x + threadIdx.x] = acc;
}

DeviceBuffer make_buffer(size_t bytes, Fill kind, uint64_t seed) {
  auto r = DeviceBuffer::allocate(bytes, "benchmark buffer");
  MISTRAL_CHECK(r.ok()) << r.status().message();
  DeviceBuffer b = std::move(r).value();
  fill_kernel<<<1024, 256>>>(b.as<uint8_t>(), bytes, seed, kind);
  MISTRAL_CUDA_CHECK_LAUNCH();
  return b;
}

struct Timer {
  cudaEvent_t start, stop;
  Timer() {
    MISTRAL_CUDA_CHECK(cudaEventCreate(&start));
    MISTRAL_CUDA_CHECK(cudaEventCreate(&stop));
  }
  ~Timer() {
    MISTRAL_CUDA_CHECK(cudaEventDestroy(start));
    MISTRAL_CUDA_CHECK(cudaEventDestroy(stop));
  }
};

// Median milliseconds of one launch: `batch` issues `launches` launches.
template <typename Batch>
double median_ms(cudaStream_t stream, int samples, int launches, Batch&& batch) {
  Timer t;
  for (int i = 0; i < 3; ++i) batch();  // warm-up: module load, cuBLASLt heuristics
  MISTRAL_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> ms(samples);
  for (int s = 0; s < samples; ++s) {
    MISTRAL_CUDA_CHECK(cudaEventRecord(t.start, stream));
    batch();
    MISTRAL_CUDA_CHECK(cudaEventRecord(t.stop, stream));
    MISTRAL_CUDA_CHECK(cudaEventSynchronize(t.stop));
    float elapsed = 0;
    MISTRAL_CUDA_CHECK(cudaEventElapsedTime(&elapsed, t.start, t.stop));
    ms[s] = static_cast<double>(elapsed) / launches;
  }
  std::sort(ms.begin(), ms.end());
  return ms[samples / 2];
}

struct Shape {
  const char* name;
  int64_t n, k;
};

// Weight copies spanning >= 256 MiB, each with its own scales.
struct Copies {
  std::vector<DeviceBuffer> data, scales;
  std::vector<DeviceWeight> weights;
};

Copies make_copies(WeightFormat f, const Shape& s) {
  DeviceWeight proto;
  proto.format = f;
  proto.n = s.n;
  proto.k = s.k;
  const size_t bytes = proto.data_bytes() + proto.scale_bytes();
  const size_t count = std::max<size_t>(1, ((size_t{256} << 20) + bytes - 1) / bytes);
  Copies c;
  for (size_t i = 0; i < count; ++i) {
    c.data.push_back(make_buffer(proto.data_bytes(),
                                 f == WeightFormat::kBF16 ? Fill::kBf16 : Fill::kBytes, 11 + i));
    if (f != WeightFormat::kBF16) {
      c.scales.push_back(make_buffer(proto.scale_bytes(), Fill::kF16Scale, 1000 + i));
    }
    DeviceWeight w = proto;
    w.data = c.data.back().data();
    w.scales = f == WeightFormat::kBF16 ? nullptr : c.scales.back().as<__half>();
    c.weights.push_back(w);
  }
  return c;
}

// Batched decode shapes through linear()'s GEMMs for m > kMaxGemvRows: gemm_mixed (int8 / int4)
// against gemm (int8 / int4: dequantize-to-bf16 tiles + cuBLASLt; bf16: cuBLASLt alone). GB/s
// counts the weights as stored (bf16: 2 bytes a weight) plus x and y.
void mixed_table(KernelContext& ctx, cudaStream_t stream, int samples, double peak_gbs,
                 double read_gbs, const Shape* shapes, size_t shape_count) {
  const int64_t most = kMaxMixedRows;
  DeviceBuffer x = make_buffer(most * 14336 * sizeof(bf16), Fill::kBf16, 8);
  DeviceBuffer y = make_buffer(most * 32000 * sizeof(bf16), Fill::kBytes, 9);
  std::printf(
      "\nbatched decode GEMMs, m > %lld (mixed: gemm_mixed; gemm: dequantize + cuBLASLt for "
      "int8 / int4, cuBLASLt for bf16)\n",
      static_cast<long long>(kMaxGemvRows));
  std::printf("%-8s %-20s %2s %-6s %9s %8s %7s %7s\n", "format", "shape (N x K)", "m", "path",
              "time us", "GB/s", "of peak", "of read");
  for (WeightFormat f : {WeightFormat::kInt4, WeightFormat::kInt8, WeightFormat::kBF16}) {
    for (size_t si = 0; si < shape_count; ++si) {
      const Shape& s = shapes[si];
      const Copies c = make_copies(f, s);
      const int launches = static_cast<int>(std::max<size_t>(c.weights.size(), 8));
      const size_t weight_bytes = c.weights[0].data_bytes() + c.weights[0].scale_bytes();
      MISTRAL_CHECK(ctx.reserve_scratch(linear_scratch_bytes(ctx, c.weights[0], most)).ok());
      for (int64_t m : {int64_t{9}, int64_t{16}, int64_t{32}}) {
        for (bool mixed : {true, false}) {
          if (mixed && f == WeightFormat::kBF16) continue;
          const double ms = median_ms(stream, samples, launches, [&] {
            for (int i = 0; i < launches; ++i) {
              const DeviceWeight& w = c.weights[i % c.weights.size()];
              if (mixed) {
                gemm_mixed(ctx, x.as<bf16>(), m, w, y.as<bf16>());
              } else {
                gemm(ctx, x.as<bf16>(), m, w, y.as<bf16>());
              }
            }
          });
          const double bytes = weight_bytes + m * s.k * 2.0 + m * s.n * 2.0;
          const double gbs = bytes / (ms * 1e-3) / 1e9;
          std::printf("%-8s %-20s %2lld %-6s %9.2f %8.0f %7.3f %7.3f\n", weight_format_name(f),
                      s.name, static_cast<long long>(m), mixed ? "mixed" : "gemm", ms * 1e3, gbs,
                      gbs / peak_gbs, gbs / read_gbs);
        }
      }
    }
  }
}

int run(int argc, char** argv) {
  int samples = 21;
  double peak_gbs = 3350.0;
  bool mixed_only = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--samples") && i + 1 < argc) {
      samples = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--peak-gbs") && i + 1 < argc) {
      peak_gbs = std::atof(argv[++i]);
    } else if (!std::strcmp(argv[i], "--mixed-only")) {
      mixed_only = true;
    } else {
      std::fprintf(stderr, "usage: gemv_bench [--samples N] [--peak-gbs G] [--mixed-only]\n");
      return 2;
    }
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::fprintf(stderr, "gemv_bench: no CUDA device\n");
    return 1;
  }
  cudaStream_t stream;
  MISTRAL_CUDA_CHECK(cudaStreamCreate(&stream));
  auto ctx_or = KernelContext::create(stream, size_t{256} << 20);
  MISTRAL_CHECK(ctx_or.ok()) << ctx_or.status().message();
  std::unique_ptr<KernelContext> owned = std::move(ctx_or).value();
  KernelContext& ctx = *owned;
  const cudaDeviceProp& p = ctx.props();
  std::printf("device: %s, sm_%d%d, %d SMs, %.1f GiB, L2 %d MiB\n", p.name, p.major, p.minor,
              p.multiProcessorCount, p.totalGlobalMem / 1073741824.0, p.l2CacheSize >> 20);
  std::printf("fractions are of %.0f GB/s (H100 SXM HBM3 datasheet); GB = 1e9 bytes\n\n", peak_gbs);

  // Copy baseline: read + write bytes.
  const size_t copy_bytes = size_t{1} << 30;
  DeviceBuffer src = make_buffer(copy_bytes, Fill::kBytes, 1);
  DeviceBuffer dst = make_buffer(copy_bytes, Fill::kBytes, 2);
  const double copy_ms = median_ms(stream, samples, 1, [&] {
    MISTRAL_CUDA_CHECK(
        cudaMemcpyAsync(dst.data(), src.data(), copy_bytes, cudaMemcpyDeviceToDevice, stream));
  });
  const double copy_gbs = 2.0 * copy_bytes / (copy_ms * 1e-3) / 1e9;
  std::printf("device-to-device copy of 1 GiB: %.3f ms, %.0f GB/s (read + write), %.3f of peak\n",
              copy_ms, copy_gbs, copy_gbs / peak_gbs);
  // Read-only streaming baseline: every byte of 1 GiB read once with coalesced 16-byte loads.
  const int read_blocks = ctx.num_sms() * 8;
  DeviceBuffer sink = make_buffer(size_t(read_blocks) * 256 * 16, Fill::kBytes, 7);
  const double read_ms = median_ms(stream, samples, 1, [&] {
    read_kernel<<<read_blocks, 256, 0, stream>>>(src.as<uint4>(), copy_bytes / 16,
                                                 sink.as<uint4>());
    MISTRAL_CUDA_CHECK_LAUNCH();
  });
  const double read_gbs = copy_bytes / (read_ms * 1e-3) / 1e9;
  std::printf("read-only stream of 1 GiB: %.3f ms, %.0f GB/s, %.3f of peak (\"of read\" below)\n\n",
              read_ms, read_gbs, read_gbs / peak_gbs);
  src = DeviceBuffer();
  dst = DeviceBuffer();

  const Shape shapes[] = {{"qo 4096x4096", 4096, 4096},
                          {"kv 1024x4096", 1024, 4096},
                          {"gate/up 14336x4096", 14336, 4096},
                          {"down 4096x14336", 4096, 14336},
                          {"lm_head 32000x4096", 32000, 4096}};
  const size_t shape_count = sizeof(shapes) / sizeof(shapes[0]);
  auto finish = [&] {
    MISTRAL_CUDA_CHECK(cudaStreamSynchronize(stream));
    owned.reset();  // the context syncs its stream on destruction: release it first
    MISTRAL_CUDA_CHECK(cudaStreamDestroy(stream));
    return 0;
  };
  if (mixed_only) {
    mixed_table(ctx, stream, samples, peak_gbs, read_gbs, shapes, shape_count);
    return finish();
  }
  const WeightFormat formats[] = {WeightFormat::kBF16, WeightFormat::kInt8, WeightFormat::kInt4};
  DeviceBuffer x = make_buffer(kMaxGemvRows * 14336 * sizeof(bf16), Fill::kBf16, 3);
  DeviceBuffer y = make_buffer(kMaxGemvRows * 32000 * sizeof(float), Fill::kBytes, 4);
  const auto* xp = x.as<bf16>();

  std::printf("%-8s %-20s %2s %-6s %9s %8s %7s %7s\n", "format", "shape (N x K)", "m", "warps/st",
              "time us", "GB/s", "of peak", "of read");
  for (WeightFormat f : formats) {
    for (const Shape& s : shapes) {
      const Copies c = make_copies(f, s);
      const int launches = static_cast<int>(std::max<size_t>(c.weights.size(), 8));
      const size_t weight_bytes = c.weights[0].data_bytes() + c.weights[0].scale_bytes();
      auto measure = [&](int64_t m, GemvOptions opt) {
        MISTRAL_CHECK(ctx.reserve_scratch(gemv_scratch_bytes(ctx, c.weights[0], opt)).ok());
        const double ms = median_ms(stream, samples, launches, [&] {
          for (int i = 0; i < launches; ++i) {
            gemv(ctx, xp, m, c.weights[i % c.weights.size()], y.as<float>(), opt);
          }
        });
        const double bytes = weight_bytes + m * s.k * 2.0 + m * s.n * 4.0;
        const double gbs = bytes / (ms * 1e-3) / 1e9;
        const std::string warps =
            (opt.warps == 0 ? std::string("auto") : std::to_string(opt.warps)) +
            (opt.stages == 0 ? "" : "/" + std::to_string(opt.stages));
        std::printf("%-8s %-20s %2lld %-6s %9.2f %8.0f %7.3f %7.3f\n", weight_format_name(f),
                    s.name, static_cast<long long>(m), warps.c_str(), ms * 1e3, gbs, gbs / peak_gbs,
                    gbs / read_gbs);
      };
      for (int64_t m : {int64_t{1}, int64_t{2}, int64_t{4}, int64_t{8}}) measure(m, {});
      // Alternatives to the chosen grid, for the record: 8 warps per SM with 4 stages (more loads
      // in flight per warp, fewer warps), and one warp per tile.
      measure(1, {8 * ctx.num_sms(), 4});
      measure(1, {static_cast<int>((s.n + 15) / 16), 3});
      if (f == WeightFormat::kBF16) {  // the peer: cuBLASLt on the same shape
        for (int64_t m : {int64_t{1}, int64_t{8}}) {
          const double ms = median_ms(stream, samples, launches, [&] {
            for (int i = 0; i < launches; ++i) {
              gemm(ctx, xp, m, c.weights[i % c.weights.size()], y.as<float>());
            }
          });
          const double bytes = weight_bytes + m * s.k * 2.0 + m * s.n * 4.0;
          const double gbs = bytes / (ms * 1e-3) / 1e9;
          std::printf("%-8s %-20s %2lld %-5s %-6s %9.2f %8.0f %7.3f %7.3f\n", "cuBLASLt", s.name,
                      static_cast<long long>(m), "-", "-", ms * 1e3, gbs, gbs / peak_gbs,
                      gbs / read_gbs);
        }
      }
    }
  }

  mixed_table(ctx, stream, samples, peak_gbs, read_gbs, shapes, shape_count);

  std::printf(
      "\nprefill GEMM through cuBLASLt, M = 512 (int8/int4: dequantize-to-bf16 tiles + "
      "cuBLASLt, timed together)\n");
  std::printf("%-6s %-20s %9s %8s\n", "format", "shape (N x K)", "time us", "TFLOP/s");
  const int64_t m = 512;
  DeviceBuffer xg = make_buffer(m * 14336 * sizeof(bf16), Fill::kBf16, 5);
  DeviceBuffer yg = make_buffer(m * 32000 * sizeof(bf16), Fill::kBytes, 6);
  for (WeightFormat f : formats) {
    for (const Shape& s : shapes) {
      const Copies c = make_copies(f, s);
      const int launches = static_cast<int>(std::max<size_t>(c.weights.size(), 4));
      const double ms = median_ms(stream, samples, launches, [&] {
        for (int i = 0; i < launches; ++i) {
          gemm(ctx, xg.as<bf16>(), m, c.weights[i % c.weights.size()], yg.as<bf16>());
        }
      });
      const double tflops = 2.0 * m * s.n * s.k / (ms * 1e-3) / 1e12;
      std::printf("%-6s %-20s %9.1f %8.0f\n", weight_format_name(f), s.name, ms * 1e3, tflops);
    }
  }
  return finish();
}

}  // namespace
}  // namespace mistral::cuda

int main(int argc, char** argv) { return mistral::cuda::run(argc, argv); }
