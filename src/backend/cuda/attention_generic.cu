// Attention for head sizes the tensor-core kernels do not take (anything even up to 256 other
// than 64 and 128, e.g. the small test models): one warp per query (row, token, head) walks the
// virtual key list of attention_common.cuh with a float32 online softmax; each lane holds
// head_dim / 32 (rounded up) elements of the query and the output. Same mask and results as the
// fast kernels to float32 rounding (P is not rounded to bf16 here). Not tuned: correctness path.
#include <algorithm>
#include <cmath>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/kernel_launch.h"

namespace mistral::cuda {
namespace {

using namespace device;

constexpr int kMaxPerLane = 8;  // head_dim <= 256
constexpr int kWarpsPerBlock = 4;

__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    attention_generic_kernel(AttentionParams p, int64_t queries) {
  device::begin_after_prior_kernels();
  if (p.first_seq_index_device != nullptr) p.first_seq_index = *p.first_seq_index_device;
  const int64_t query = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (query >= queries) return;
  const int lane = threadIdx.x % 32;
  const int64_t h = query % p.num_heads;
  const int64_t t = (query / p.num_heads) % p.new_tokens;
  const int64_t b = query / (p.num_heads * p.new_tokens);
  const int64_t kvh = h / (p.num_heads / p.num_kv_heads);
  const int64_t hd = p.head_dim;
  const bf16* q = p.q + ((b * p.new_tokens + t) * p.num_heads + h) * hd;
  float qv[kMaxPerLane], acc[kMaxPerLane];
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int64_t e = lane + 32 * i;
    qv[i] = e < hd ? __bfloat162float(q[e]) : 0.0f;
    acc[i] = 0.0f;
  }
  const int64_t q_seq = p.first_seq_index + t;
  float max_score = -INFINITY, sum = 0.0f;
  for (int64_t j = 0; j < p.capacity + p.new_tokens; ++j) {
    const bf16 *k_src, *v_src;
    const int64_t k_seq = key_at(p, b, kvh, j, &k_src, &v_src);
    if (!visible(q_seq, k_seq, p.sliding_window)) continue;
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int64_t e = lane + 32 * i;
      if (e < hd) dot += qv[i] * __bfloat162float(k_src[e]);
    }
    const float score = warp_sum(dot) * p.scale;
    const float new_max = fmaxf(max_score, score);
    const float correction = expf(max_score - new_max);  // 0 on the first key
    const float w = expf(score - new_max);
    sum = sum * correction + w;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int64_t e = lane + 32 * i;
      acc[i] = acc[i] * correction + (e < hd ? w * __bfloat162float(v_src[e]) : 0.0f);
    }
    max_score = new_max;
  }
  bf16* out = p.out + ((b * p.new_tokens + t) * p.num_heads + h) * hd;
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int64_t e = lane + 32 * i;
    if (e < hd) out[e] = __float2bfloat16(acc[i] * inv);
  }
}

}  // namespace

void attention_generic(KernelContext& ctx, const AttentionParams& p) {
  MISTRAL_CHECK(p.batch > 0 && p.new_tokens > 0 && p.num_kv_heads > 0 &&
                p.num_heads % p.num_kv_heads == 0)
      << "attention batch=" << p.batch << " T=" << p.new_tokens << " heads=" << p.num_heads
      << " kv_heads=" << p.num_kv_heads;
  MISTRAL_CHECK(p.head_dim > 0 && p.head_dim <= 32 * kMaxPerLane)
      << "head_dim " << p.head_dim << " (at most " << 32 * kMaxPerLane << ")";
  check_cache_blocks(p.block_table, p.block_size, p.blocks_per_row, p.capacity);
  const int64_t queries = p.batch * p.new_tokens * p.num_heads;
  const int64_t blocks = (queries + kWarpsPerBlock - 1) / kWarpsPerBlock;
  launch_kernel(ctx, attention_generic_kernel, static_cast<unsigned>(blocks), kWarpsPerBlock * 32,
                0, p, queries);
  MISTRAL_CUDA_CHECK_LAUNCH();
}

}  // namespace mistral::cuda
