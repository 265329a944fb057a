// A fixed pool of worker threads for data-parallel loops. parallel_for splits [0, n) into
// contiguous chunks, runs them on the workers and the calling thread, and returns when all are
// done. One parallel_for at a time per pool (calls from several threads are serialized); nested
// calls from inside a task run inline on the calling worker.
// Waiting threads spin for up to kSpinMicros before they sleep: decode issues hundreds of short
// parallel_for calls per token, and waking a sleeping thread costs 20-50 us on a VM (a 100 us
// two-chunk loop took 145 us on the 2-core Zen 4 VM), while idle pools still sleep.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace mistral {

class ThreadPool {
 public:
  // num_threads counts the calling thread: 1 means no workers, everything runs inline.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) over disjoint chunks covering [0, n); chunks hold at least `grain` items.
  void parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn);

  // A process-wide pool sized by set_default_threads (default: hardware concurrency).
  static ThreadPool& global();
  static void set_default_threads(int num_threads);

  static constexpr int kSpinMicros = 1000;

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // serializes parallel_for callers
  std::mutex mutex_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  // Written under mutex_; the atomics are also read without it while spinning.
  const std::function<void(size_t, size_t)>* task_ = nullptr;
  size_t task_n_ = 0;
  size_t chunks_ = 0;
  size_t next_chunk_ = 0;
  std::atomic<size_t> chunks_done_ = 0;
  std::atomic<uint64_t> generation_ = 0;
  std::atomic<bool> stop_ = false;
};

}  // namespace mistral
