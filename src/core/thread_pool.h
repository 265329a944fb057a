// A fixed pool of worker threads for data-parallel loops. parallel_for splits [0, n) into
// contiguous chunks, runs them on the workers and the calling thread, and returns when all are
// done. One parallel_for at a time per pool (calls from several threads are serialized); nested
// calls from inside a task run inline on the calling worker.
#pragma once

#include <condition_variable>
#include <cstddef>
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

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // serializes parallel_for callers
  std::mutex mutex_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const std::function<void(size_t, size_t)>* task_ = nullptr;
  size_t task_n_ = 0;
  size_t chunks_ = 0;
  size_t next_chunk_ = 0;
  size_t chunks_done_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace mistral
