// PinnedPool: small page-locked host blocks, each with an event, reused across copies, so that
// host <-> device copies through them are asynchronous (a copy from pageable memory may wait for
// the stream, and one to pageable memory always does). A block is taken for one copy and given
// back after it; taking it again first waits for the copy last recorded on its event, so the
// host never writes or reads a block a queued copy still uses. Blocks of up to kMaxBytes; larger
// copies are the caller's to do otherwise. A block whose copy is still queued is not waited for
// while the pool may grow (to kMaxBlocks). One pool per stream; not thread-safe.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <deque>
#include <memory>
#include <vector>

namespace mistral::cuda {

class PinnedPool {
 public:
  static constexpr size_t kMaxBytes = size_t{64} << 10;
  static constexpr size_t kMaxBlocks = 16;

  struct Block {
    void* host = nullptr;  // kMaxBytes of page-locked memory
    cudaEvent_t done = nullptr;
  };

  PinnedPool() = default;
  PinnedPool(const PinnedPool&) = delete;
  PinnedPool& operator=(const PinnedPool&) = delete;
  ~PinnedPool();

  // A free block whose last copy is complete (the oldest one given back, a new one, or, with
  // kMaxBlocks made, the oldest after its copy); nullptr when page-locked memory cannot be had.
  Block* take();
  // Hands `block` back; with a stream, after the copy through it was queued there (its event is
  // recorded there), else its copy is complete or already recorded on its event.
  void give(Block* block, cudaStream_t stream);

 private:
  std::vector<std::unique_ptr<Block>> blocks_;
  std::deque<Block*> free_;  // oldest first
};

}  // namespace mistral::cuda
