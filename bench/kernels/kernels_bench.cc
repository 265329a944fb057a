// Google Benchmark entries for every CPU kernel (STYLE.md: a kernel is done with a scalar
// reference test, in tests/backend/kernels_test.cc, and a benchmark entry, here). Shapes are
// Mistral-7B's. Counters report bytes of weights read per second, the figure decode is bound by.
// Run: build/bench/kernels/kernels_bench [--benchmark_filter=Matmul]
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <vector>

#include "backend/cpu/ops.h"
#include "core/half.h"
#include "core/quant.h"
#include "core/thread_pool.h"

namespace mistral {
namespace {

Tensor random_matrix(DType dtype, int64_t n, int64_t k) {
  Tensor w = Tensor::allocate(dtype, {n, k});
  uint64_t state = 12345;
  for (uint64_t i = 0; i < w.num_elements(); ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const float v = (static_cast<float>(state >> 40) / 16777216.0f - 0.5f) * 0.04f;
    if (dtype == DType::kBF16) {
      static_cast<BF16*>(w.mutable_data())[i] = float_to_bf16(v);
    } else {
      static_cast<float*>(w.mutable_data())[i] = v;
    }
  }
  return w;
}

// Args: tokens (m), output features (n), weights (0 = F32, 1 = BF16, 2 = int8, 3 = int4 in row
// layout, 4 = int4 in the CPU backend's 16-row tiles), input features (k).
void BM_Matmul(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1);
  const int64_t k = state.range(3);
  const int64_t format = state.range(2);
  Tensor w = random_matrix(format == 0 ? DType::kF32 : DType::kBF16, n, k);
  if (format >= 2)
    w = quantize_matrix(w, format == 2 ? QuantType::kInt8 : QuantType::kInt4).value();
  if (format == 4) w = pack_int4_tiles(w);
  std::vector<float> x(m * k, 0.01f), y(m * n);
  for (auto _ : state) {
    cpu::matmul(x.data(), m, w, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["weight_GB/s"] = benchmark::Counter(
      static_cast<double>(w.num_bytes()) * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * n * k * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}
// n = 14336: the MLP's gate/up (117 MB in BF16, beyond the 32 MB last-level cache); the
// quantized decode rows use n = 57344 so that they too stream 117 MB (int4) or 235 MB (int8).
BENCHMARK(BM_Matmul)
    ->Args({1, 14336, 1, 4096})
    ->Args({1, 14336, 0, 4096})
    ->Args({1, 57344, 2, 4096})
    ->Args({1, 57344, 3, 4096})
    ->Args({1, 57344, 4, 4096})
    ->Args({1, 4096, 3, 4096})
    ->Args({1, 4096, 4, 4096})
    ->Args({1, 4096, 2, 4096})
    ->Args({16, 14336, 1, 4096})
    ->Args({64, 4096, 1, 4096})
    ->Args({64, 14336, 1, 4096})
    ->Args({64, 4096, 1, 14336})
    ->Args({64, 4096, 2, 4096})
    ->Args({64, 4096, 3, 4096})
    ->Args({64, 4096, 4, 4096})
    ->Args({64, 14336, 4, 4096})
    ->Args({64, 14336, 3, 4096})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_RmsNorm(benchmark::State& state) {
  const int64_t m = state.range(0), n = 4096;
  Tensor w = Tensor::allocate(DType::kF32, {n});
  std::vector<float> x(m * n, 0.5f), y(m * n);
  for (auto _ : state) cpu::rmsnorm(x.data(), m, w, 1e-5f, y.data());
}
BENCHMARK(BM_RmsNorm)->Arg(1)->Arg(64);

void BM_Rope(benchmark::State& state) {
  const int64_t tokens = state.range(0), heads = 32, head_dim = 128;
  std::vector<float> x(tokens * heads * head_dim, 0.5f);
  std::vector<int64_t> positions(tokens);
  for (int64_t t = 0; t < tokens; ++t) positions[t] = 1000 + t;
  for (auto _ : state) cpu::rope(x.data(), tokens, heads, head_dim, positions.data(), 1e6);
}
BENCHMARK(BM_Rope)->Arg(1)->Arg(64);

void BM_SiluMul(benchmark::State& state) {
  const int64_t n = state.range(0) * 14336;
  std::vector<float> g(n, 0.3f), u(n, 0.7f), out(n);
  for (auto _ : state) cpu::silu_mul(g.data(), u.data(), out.data(), n);
}
BENCHMARK(BM_SiluMul)->Arg(1)->Arg(64);

// Decode attention of one token over `context` cached positions (32 heads, 8 kv heads) with the
// cache stored as F32 (0), BF16 (1), F16 (2) or I8 (3), unpaged (block size 0) or paged in
// blocks of 16 positions whose table reverses their order. Reports the cache bytes read per
// second.
void BM_AttentionDecode(benchmark::State& state) {
  const int64_t context = state.range(0), heads = 32, kv_heads = 8, hd = 128;
  const int64_t block_size = state.range(2);
  const DType dtypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kI8};
  const DType dtype = dtypes[state.range(1)];
  std::vector<float> q(heads * hd, 0.1f), k(kv_heads * hd, 0.1f), v(kv_heads * hd, 0.1f);
  Tensor kc = Tensor::allocate(dtype, {context, kv_heads, hd});
  Tensor vc = Tensor::allocate(dtype, {context, kv_heads, hd});
  for (uint64_t i = 0; i < kc.num_elements(); ++i) {
    if (dtype == DType::kI8) {
      static_cast<int8_t*>(kc.mutable_data())[i] = static_cast<int8_t>(i % 200 - 100);
      static_cast<int8_t*>(vc.mutable_data())[i] = static_cast<int8_t>(i % 190 - 95);
    } else {
      store_float(kc.mutable_data(), dtype, i, 0.001f * static_cast<float>(i % 200) - 0.1f);
      store_float(vc.mutable_data(), dtype, i, 0.001f * static_cast<float>(i % 190) - 0.1f);
    }
  }
  std::vector<float> scales(context * kv_heads, 0.01f);
  std::vector<float> out(heads * hd);
  std::vector<int64_t> slots(context);
  for (int64_t s = 0; s < context; ++s) slots[s] = s;
  std::vector<uint8_t> valid(context, 1), new_valid(1, 1);
  AttentionArgs a;
  a.batch = 1;
  a.new_tokens = 1;
  a.num_heads = heads;
  a.num_kv_heads = kv_heads;
  a.head_dim = hd;
  a.first_seq_index = context;
  a.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  a.q = q.data();
  a.k = k.data();
  a.v = v.data();
  a.new_valid = new_valid.data();
  a.capacity = context;
  a.cache_dtype = dtype;
  a.k_cache = kc.data;
  a.v_cache = vc.data;
  if (dtype == DType::kI8) {
    a.k_scale = scales.data();
    a.v_scale = scales.data();
  }
  a.slot_seq_index = slots.data();
  a.slot_valid = valid.data();
  a.out = out.data();
  std::vector<int32_t> table;
  if (block_size > 0) {
    const int64_t blocks = (context + block_size - 1) / block_size;
    for (int64_t i = 0; i < blocks; ++i) table.push_back(static_cast<int32_t>(blocks - 1 - i));
    a.blocks = {block_size, blocks, table.data()};
  }
  for (auto _ : state) cpu::attention(a);
  const double cache_bytes = static_cast<double>(kc.num_bytes() + vc.num_bytes()) +
                             (dtype == DType::kI8 ? 2.0 * sizeof(float) * scales.size() : 0.0);
  state.counters["cache_GB/s"] =
      benchmark::Counter(cache_bytes * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_AttentionDecode)->ArgsProduct({{512, 4096}, {0, 1, 2, 3}, {0, 16}})->UseRealTime();

}  // namespace
}  // namespace mistral

// MISTRAL_BENCH_THREADS=N runs the kernels on N threads (default: one per core).
int main(int argc, char** argv) {
  const char* threads = std::getenv("MISTRAL_BENCH_THREADS");
  mistral::ThreadPool::set_default_threads(threads ? std::atoi(threads) : 0);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
