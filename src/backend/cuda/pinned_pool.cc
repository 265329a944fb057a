#include "backend/cuda/pinned_pool.h"

#include "backend/cuda/cuda_check.h"

namespace mistral::cuda {

PinnedPool::~PinnedPool() {
  for (const auto& b : blocks_) {
    if (b->done != nullptr) {
      MISTRAL_CUDA_CHECK(cudaEventSynchronize(b->done));
      MISTRAL_CUDA_CHECK(cudaEventDestroy(b->done));
    }
    if (b->host != nullptr) MISTRAL_CUDA_CHECK(cudaFreeHost(b->host));
  }
}

PinnedPool::Block* PinnedPool::take() {
  const bool can_grow = blocks_.size() < kMaxBlocks;
  if (!free_.empty()) {
    const cudaError_t state = cudaEventQuery(free_.front()->done);
    if (state != cudaErrorNotReady) MISTRAL_CUDA_CHECK(state);
    if (state == cudaSuccess || !can_grow) {
      Block* block = free_.front();
      free_.pop_front();
      MISTRAL_CUDA_CHECK(cudaEventSynchronize(block->done));
      return block;
    }
  }
  if (!can_grow) return nullptr;  // every block is out
  auto block = std::make_unique<Block>();
  if (cudaMallocHost(&block->host, kMaxBytes) != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  MISTRAL_CUDA_CHECK(cudaEventCreateWithFlags(&block->done, cudaEventDisableTiming));
  blocks_.push_back(std::move(block));
  return blocks_.back().get();
}

void PinnedPool::give(Block* block, cudaStream_t stream) {
  if (stream != nullptr) MISTRAL_CUDA_CHECK(cudaEventRecord(block->done, stream));
  free_.push_back(block);
}

}  // namespace mistral::cuda
