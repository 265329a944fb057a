#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>

#include "core/check.h"

namespace mistral {
namespace {

thread_local bool tls_inside_pool_task = false;
std::atomic<int> g_default_threads{0};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins until done() holds or ThreadPool::kSpinMicros pass; returns done().
template <typename Done>
bool spin_until(Done done) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::microseconds(ThreadPool::kSpinMicros);
  for (int i = 0;; ++i) {
    if (done()) return true;
    cpu_relax();
    if (i % 64 == 63 && std::chrono::steady_clock::now() > deadline) return done();
  }
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  MISTRAL_CHECK(num_threads >= 1) << "num_threads=" << num_threads;
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::parallel_for(size_t n, size_t grain,
                              const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  grain = std::max<size_t>(grain, 1);
  const size_t max_chunks = std::max<size_t>(1, n / grain);  // every chunk >= grain items
  const size_t chunks = std::min<size_t>(max_chunks, static_cast<size_t>(num_threads()));
  if (chunks <= 1 || tls_inside_pool_task) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    task_ = &fn;
    task_n_ = n;
    chunks_ = chunks;
    next_chunk_ = 0;
    chunks_done_ = 0;
    ++generation_;
  }
  start_cv_.notify_all();
  // The caller works too, taking chunks until none are left.
  for (;;) {
    size_t chunk;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (next_chunk_ >= chunks_) break;
      chunk = next_chunk_++;
    }
    tls_inside_pool_task = true;
    fn(chunk * n / chunks, (chunk + 1) * n / chunks);
    tls_inside_pool_task = false;
    std::lock_guard<std::mutex> lock(mutex_);
    ++chunks_done_;
  }
  const size_t chunks_total = chunks;
  if (!spin_until([&] { return chunks_done_.load(std::memory_order_acquire) == chunks_total; })) {
    std::unique_lock<std::mutex> lock(mutex_);
    done_cv_.wait(lock, [&] { return chunks_done_.load() == chunks_total; });
  }
  std::lock_guard<std::mutex> lock(mutex_);
  task_ = nullptr;
}

void ThreadPool::worker_loop(int /*index*/) {
  uint64_t seen_generation = 0;
  for (;;) {
    spin_until([&] {
      return stop_.load(std::memory_order_relaxed) ||
             generation_.load(std::memory_order_acquire) != seen_generation;
    });
    std::unique_lock<std::mutex> lock(mutex_);
    start_cv_.wait(lock, [&] { return stop_ || generation_ != seen_generation; });
    if (stop_) return;
    seen_generation = generation_;
    while (task_ != nullptr && next_chunk_ < chunks_) {
      const size_t chunk = next_chunk_++;
      const auto* fn = task_;
      const size_t n = task_n_, chunks = chunks_;
      lock.unlock();
      tls_inside_pool_task = true;
      (*fn)(chunk * n / chunks, (chunk + 1) * n / chunks);
      tls_inside_pool_task = false;
      lock.lock();
      if (++chunks_done_ == chunks_) done_cv_.notify_all();
    }
  }
}

ThreadPool& ThreadPool::global() {
  static std::unique_ptr<ThreadPool> pool = [] {
    int n = g_default_threads.load();
    if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    return std::make_unique<ThreadPool>(n);
  }();
  return *pool;
}

void ThreadPool::set_default_threads(int num_threads) { g_default_threads.store(num_threads); }

}  // namespace mistral
