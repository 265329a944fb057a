// Read bandwidth of the access orders a decode kernel may use, one thread, over 117 MiB: rows of
// 2 KiB (an int4 row of 4096 values) read one after another, R rows side by side 64 bytes at a
// time (the int4 tile kernel's order), and two sequential streams far apart (the int4 decode
// kernel's order). On the Zen 4 VM (2026-11-28): one row at a time 23-30 GB/s, 2 rows side by
// side 11-12, 4 rows side by side 13.5-15, two far streams 27-32.
// Build: g++ -O2 -mavx512f -mavx512bw -o stream_pattern bench/tools/stream_pattern.cc
// GCC 12's intrinsic headers trip its own uninitialized-variable warnings (_mm512_undefined_*).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

__m512i consume(__m512i acc, const char* p) {
  const __m512i v = _mm512_loadu_si512(p);
  acc = _mm512_add_epi32(acc, _mm512_and_si512(v, _mm512_set1_epi8(15)));
  return _mm512_add_epi32(acc, _mm512_srli_epi16(v, 4));
}

// Tiles of `rows` rows of `row` bytes, 64 bytes of each row per step.
__attribute__((noinline)) __m512i side_by_side(const char* p, size_t bytes, size_t row, int rows) {
  __m512i acc = _mm512_setzero_si512();
  const size_t tile = row * rows;
  for (size_t t = 0; t + tile <= bytes; t += tile) {
    for (size_t s = 0; s < row; s += 64) {
      for (int r = 0; r < rows; ++r) acc = consume(acc, p + t + r * row + s);
    }
  }
  return acc;
}

__attribute__((noinline)) __m512i two_far_streams(const char* p, size_t bytes) {
  __m512i acc = _mm512_setzero_si512();
  const char* q = p + bytes / 2;
  for (size_t s = 0; s < bytes / 2; s += 64) acc = consume(consume(acc, p + s), q + s);
  return acc;
}

template <typename Run>
void report(const char* what, size_t bytes, Run run) {
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    const __m512i a = run();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    volatile int sink = _mm512_reduce_add_epi32(a);
    (void)sink;
    best = std::max(best, bytes / s / 1e9);
  }
  std::printf("%s: %.1f GB/s (best of 5)\n", what, best);
}

}  // namespace

int main() {
  const size_t bytes = size_t{117} << 20;
  char* p = static_cast<char*>(std::aligned_alloc(4096, bytes));
  std::memset(p, 1, bytes);
  report("2 KiB rows one after another", bytes, [&] { return side_by_side(p, bytes, 2048, 1); });
  report("2 rows side by side", bytes, [&] { return side_by_side(p, bytes, 2048, 2); });
  report("4 rows side by side", bytes, [&] { return side_by_side(p, bytes, 2048, 4); });
  report("two far streams", bytes, [&] { return two_far_streams(p, bytes); });
  std::free(p);
}
