// Measures the machine's read bandwidth: threads sum a 1 GiB buffer with AVX-512 loads.
// Build: g++ -O2 -o read_bandwidth bench/tools/read_bandwidth.cc -lpthread; run: ./read_bandwidth 2
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>
__attribute__((target("avx512f"))) float sum(const float* p, size_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}
int main(int argc, char** argv) {
  int threads = atoi(argv[1]);
  size_t n = size_t(1) << 28;  // 1 GiB
  float* p = (float*)aligned_alloc(64, n * 4);
  memset(p, 1, n * 4);
  for (int it = 0; it < 3; ++it) {
    auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> ts;
    std::vector<float> out(threads);
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&, t] { out[t] = sum(p + n / threads * t, n / threads); });
    for (auto& t : ts) t.join();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("%d threads: %.1f GB/s\n", threads, n * 4 / s / 1e9);
  }
}
