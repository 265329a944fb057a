// Read speed of the orders a BF16 decode GEMV may read its weight rows in: 2 threads (spinning,
// as the engine's pool), 1 x 57344 x 4096 bf16 (470 MB, beyond the last-level cache), variants
// interleaved pass by pass so that the host's drifting bandwidth hits them alike; prints medians.
// On the Zen 4 VM (2026-11-28, bench/RESULTS.md) the answer moved with the host's bandwidth:
// with read_bandwidth at 52-56 GB/s, tiles of 8 rows side by side 45 GB/s, one row at a time or
// two far streams 55-60; at 29-48 GB/s, tiles 40.5-42.4, two far streams 39.1-43.7, one row at a
// time 37.3-39.5.
// Build: g++ -O2 -std=c++20 -o bf16_decode_pattern bench/tools/bf16_decode_pattern.cc -lpthread
// Run:   ./bf16_decode_pattern [threads=2] [rows=57344] [passes=40]
// GCC 12's intrinsic headers trip its own uninitialized-variable warnings (_mm512_undefined_*).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace {

#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// R rows side by side, one accumulator each (R = 8: the previous decode tile).
template <int R>
BF16_TARGET void side_by_side(const uint16_t* x, const uint16_t* const* w, int64_t k, float* out) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; i += 32) {
    const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + i);
    for (int r = 0; r < R; ++r)
      acc[r] = _mm512_dpbf16_ps(acc[r], xv, (__m512bh)_mm512_loadu_si512(w[r] + i));
  }
  for (int r = 0; r < R; ++r) out[r] = _mm512_reduce_add_ps(acc[r]);
}

// R rows (1: one stream; 2: rows from two far streams), two accumulators each.
template <int R>
BF16_TARGET void rows_2acc(const uint16_t* x, const uint16_t* const* w, int64_t k, float* out) {
  __m512 a[R], b[R];
  for (int r = 0; r < R; ++r) a[r] = b[r] = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; i += 64) {
    const __m512bh x0 = (__m512bh)_mm512_loadu_si512(x + i);
    const __m512bh x1 = (__m512bh)_mm512_loadu_si512(x + i + 32);
    for (int r = 0; r < R; ++r) {
      a[r] = _mm512_dpbf16_ps(a[r], x0, (__m512bh)_mm512_loadu_si512(w[r] + i));
      b[r] = _mm512_dpbf16_ps(b[r], x1, (__m512bh)_mm512_loadu_si512(w[r] + i + 32));
    }
  }
  for (int r = 0; r < R; ++r) out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a[r], b[r]));
}

// Workers spin on a generation counter: no sleeping between passes.
class SpinPool {
 public:
  explicit SpinPool(int n) : n_(n) {
    for (int t = 1; t < n; ++t) {
      threads_.emplace_back([this, t] {
        for (int seen = 0;;) {
          while (generation_.load(std::memory_order_acquire) == seen) _mm_pause();
          seen = generation_.load();
          if (stop_) return;
          (*fn_)(t);
          done_.fetch_add(1);
        }
      });
    }
  }
  ~SpinPool() {
    stop_ = true;
    generation_.fetch_add(1);
    for (auto& t : threads_) t.join();
  }
  void run(const std::function<void(int)>& fn) {
    fn_ = &fn;
    done_ = 0;
    generation_.fetch_add(1, std::memory_order_release);
    fn(0);
    while (done_.load() != n_ - 1) _mm_pause();
  }

 private:
  int n_;
  std::vector<std::thread> threads_;
  std::atomic<int> generation_{0}, done_{0};
  const std::function<void(int)>* fn_ = nullptr;
  std::atomic<bool> stop_{false};
};

}  // namespace

int main(int argc, char** argv) {
  const int nt = argc > 1 ? std::atoi(argv[1]) : 2;
  const int64_t n = argc > 2 ? std::atoll(argv[2]) : 57344, k = 4096;
  const int passes = argc > 3 ? std::atoi(argv[3]) : 40;
  std::vector<uint16_t> x(k, 0x3c00);
  auto* w = static_cast<uint16_t*>(std::aligned_alloc(64, n * k * 2));
  for (int64_t i = 0; i < n * k; ++i) w[i] = 0x3c00 + (i & 0xff);
  std::vector<float> y(n);
  // Each variant computes rows [b, e) of thread t.
  struct Variant {
    const char* name;
    std::function<void(int t, int64_t b, int64_t e)> run;
  };
  const std::vector<Variant> variants = {
      {"8-row tiles side by side",
       [&](int, int64_t b, int64_t e) {
         const uint16_t* rows[8];
         float out[8];
         for (int64_t r0 = b; r0 < e; r0 += 8) {
           for (int r = 0; r < 8; ++r) rows[r] = w + std::min(r0 + r, e - 1) * k;
           side_by_side<8>(x.data(), rows, k, out);
           for (int r = 0; r < 8 && r0 + r < e; ++r) y[r0 + r] = out[r];
         }
       }},
      {"one row at a time",
       [&](int, int64_t b, int64_t e) {
         for (int64_t r = b; r < e; ++r) {
           const uint16_t* row = w + r * k;
           rows_2acc<1>(x.data(), &row, k, &y[r]);
         }
       }},
      {"two far streams (halves)",
       [&](int, int64_t b, int64_t e) {
         const int64_t h = (e - b) / 2;
         for (int64_t i = 0; i < h; ++i) {
           const uint16_t* rows[2] = {w + (b + i) * k, w + (b + h + i) * k};
           float out[2];
           rows_2acc<2>(x.data(), rows, k, out);
           y[b + i] = out[0];
           y[b + h + i] = out[1];
         }
       }},
      {"256-row chunks interleaved",
       [&](int t, int64_t, int64_t) {
         for (int64_t c = t * 256; c < n; c += nt * 256) {
           for (int64_t r = c; r < std::min(n, c + 256); ++r) {
             const uint16_t* row = w + r * k;
             rows_2acc<1>(x.data(), &row, k, &y[r]);
           }
         }
       }},
  };
  SpinPool pool(nt);
  std::vector<std::vector<double>> gbs(variants.size());
  for (int pass = 0; pass < passes; ++pass) {
    for (size_t v = 0; v < variants.size(); ++v) {
      const std::function<void(int)> fn = [&](int t) {
        variants[v].run(t, n * t / nt, n * (t + 1) / nt);
      };
      const auto t0 = std::chrono::steady_clock::now();
      pool.run(fn);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      gbs[v].push_back(static_cast<double>(n) * k * 2 / s / 1e9);
    }
  }
  for (size_t v = 0; v < variants.size(); ++v) {
    std::sort(gbs[v].begin(), gbs[v].end());
    std::printf("%-28s median %5.1f GB/s (quartiles %5.1f-%5.1f)\n", variants[v].name,
                gbs[v][gbs[v].size() / 2], gbs[v][gbs[v].size() / 4],
                gbs[v][gbs[v].size() * 3 / 4]);
  }
  std::free(w);
}
