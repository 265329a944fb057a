// Prefill attention, FlashAttention-2 style on tensor cores (mma m16n8k16 bf16, float32
// accumulation). A block takes 64 query rows of one (batch row, kv head): the rows are
// (token, head-in-group) pairs, so the heads sharing a kv head share each staged key tile. Each
// of its 4 warps owns 16 rows and keeps their output (16 x head_dim, float32) and running
// max / sum in registers; keys and values come through shared memory 64 at a time. Scores stay in
// registers, in the exp2 domain (scaled by scale * log2 e). The score fragment of Q K^T is laid out
// as the A fragment of P V, so P never leaves registers.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/kernel_launch.h"
#include "backend/cuda/kernels.h"

namespace mistral::cuda {
namespace {

using namespace device;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBlockRows = kWarps * 16;
constexpr int kKeyTile = 64;

template <int D>
__global__ void __launch_bounds__(kThreads)
    attention_prefill_kernel(AttentionParams p, float scale_log2) {
  device::begin_after_prior_kernels();
  if (p.first_seq_index_device != nullptr) p.first_seq_index = *p.first_seq_index_device;
  // Rows padded by 16 bytes: the 32 lanes' fragment reads then fall in distinct banks.
  constexpr int kStride = D + 8;
  __shared__ __align__(16) bf16 k_tile[kKeyTile * kStride];
  __shared__ __align__(16) bf16 v_tile[kKeyTile * kStride];
  __shared__ int64_t key_seq[kKeyTile];

  const int64_t b = blockIdx.z, kvh = blockIdx.y;
  const int64_t group = p.num_heads / p.num_kv_heads;
  const int64_t total_rows = p.new_tokens * group;
  const int64_t block_row0 = int64_t(blockIdx.x) * kBlockRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;

  // This thread's two rows (fragment rows g and g + 8 of its warp).
  int64_t rows[2], q_seq[2];
  const bf16* q_ptr[2];
  bf16* out_ptr[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    rows[i] = block_row0 + warp * 16 + g + 8 * i;
    const int64_t r = min(rows[i], total_rows - 1);
    const int64_t tq = r / group, h = kvh * group + r % group;
    q_seq[i] = p.first_seq_index + tq;
    const int64_t off = ((b * p.new_tokens + tq) * p.num_heads + h) * D;
    q_ptr[i] = p.q + off;
    out_ptr[i] = p.out + off;
  }
  const bool row_ok[2] = {rows[0] < total_rows, rows[1] < total_rows};

  uint32_t q_frag[D / 16][4];
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int d = 16 * ks + 2 * t + 8 * half;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        q_frag[ks][2 * half + i] =
            row_ok[i] ? *reinterpret_cast<const uint32_t*>(q_ptr[i] + d) : 0u;
      }
    }
  }

  float o[D / 8][4];
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};  // this thread's share; the quad's four are added at the end

  // Sequence indices of the block's queries; keys beyond the last query's token are never needed.
  const int64_t last_row = min(block_row0 + kBlockRows, total_rows) - 1;
  const int64_t q_lo = p.first_seq_index + block_row0 / group;
  const int64_t q_hi = p.first_seq_index + last_row / group;
  const int64_t key_end = p.capacity + last_row / group + 1;

  for (int64_t tile0 = 0; tile0 < key_end; tile0 += kKeyTile) {
    __syncthreads();  // every warp is done with the previous tile
    bool any_key = false;
    for (int c = threadIdx.x; c < kKeyTile * (D / 8); c += kThreads) {
      const int key = c / (D / 8), chunk = c % (D / 8);
      const int64_t j = tile0 + key;
      int64_t seq = -1;
      const bf16 *k_src = nullptr, *v_src = nullptr;
      if (j < key_end) seq = key_at(p, b, kvh, j, &k_src, &v_src);
      if (seq >= 0) {  // drop keys no query of this block can see
        const int64_t q = max(seq, q_lo);
        if (q > q_hi || (p.sliding_window > 0 && q - seq >= p.sliding_window)) seq = -1;
      }
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);  // finite for masked keys
      if (seq >= 0) {
        kv = *reinterpret_cast<const uint4*>(k_src + chunk * 8);
        vv = *reinterpret_cast<const uint4*>(v_src + chunk * 8);
        any_key = true;
      }
      *reinterpret_cast<uint4*>(&k_tile[key * kStride + chunk * 8]) = kv;
      *reinterpret_cast<uint4*>(&v_tile[key * kStride + chunk * 8]) = vv;
      if (chunk == 0) key_seq[key] = seq;
    }
    if (!__syncthreads_or(any_key)) continue;

    // S = Q K^T: s[nt] covers keys 8 nt .. 8 nt + 7.
    float s[kKeyTile / 8][4];
#pragma unroll
    for (int nt = 0; nt < kKeyTile / 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
      const bf16* krow = &k_tile[(8 * nt + g) * kStride + 2 * t];
#pragma unroll
      for (int ks = 0; ks < D / 16; ++ks) {
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(krow + 16 * ks);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(krow + 16 * ks + 8);
        mma_bf16_16816(s[nt], q_frag[ks], {b0, b1});
      }
    }

    // Mask, scale, and the online softmax update of rows g (i = 0) and g + 8 (i = 1).
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kKeyTile / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = e / 2;
        const int64_t kseq = key_seq[8 * nt + 2 * t + (e & 1)];
        const bool ok = row_ok[i] && visible(q_seq[i], kseq, p.sliding_window);
        s[nt][e] = ok ? s[nt][e] * scale_log2 : -INFINITY;
        tile_max[i] = fmaxf(tile_max[i], s[nt][e]);
      }
    }
    float alpha[2], base[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(kFullMask, tile_max[i], 1));
      tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(kFullMask, tile_max[i], 2));
      const float new_max = fmaxf(row_max[i], tile_max[i]);
      base[i] = new_max == -INFINITY ? 0.0f : new_max;  // all masked so far: avoid inf - inf
      alpha[i] = exp2f(row_max[i] - base[i]);
      row_max[i] = new_max;
      row_sum[i] *= alpha[i];
    }
#pragma unroll
    for (int nt = 0; nt < kKeyTile / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nt][e] = exp2f(s[nt][e] - base[e / 2]);
        row_sum[e / 2] += s[nt][e];
      }
    }
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      o[dt][0] *= alpha[0];
      o[dt][1] *= alpha[0];
      o[dt][2] *= alpha[1];
      o[dt][3] *= alpha[1];
    }

    // O += P V, 16 keys per mma.
#pragma unroll
    for (int kk = 0; kk < kKeyTile / 16; ++kk) {
      const uint32_t a[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]),
                             pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                             pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
      const bf16* v0 = &v_tile[(16 * kk + 2 * t) * kStride + g];
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        const bf16* v = v0 + 8 * dt;
        const uint32_t b0 = as_u32(__halves2bfloat162(v[0], v[kStride]));
        const uint32_t b1 = as_u32(__halves2bfloat162(v[8 * kStride], v[9 * kStride]));
        mma_bf16_16816(o[dt], a, {b0, b1});
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    row_sum[i] += __shfl_xor_sync(kFullMask, row_sum[i], 1);
    row_sum[i] += __shfl_xor_sync(kFullMask, row_sum[i], 2);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (!row_ok[i]) continue;
    const float inv = row_sum[i] > 0.0f ? 1.0f / row_sum[i] : 0.0f;  // no visible key: zeros
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      *reinterpret_cast<uint32_t*>(out_ptr[i] + 8 * dt + 2 * t) =
          pack_bf16x2(o[dt][2 * i] * inv, o[dt][2 * i + 1] * inv);
    }
  }
}

}  // namespace

void check_attention_params(const AttentionParams& p) {
  MISTRAL_CHECK(p.batch > 0 && p.new_tokens > 0 && p.num_kv_heads > 0 && p.num_heads > 0 &&
                p.num_heads % p.num_kv_heads == 0)
      << "attention batch=" << p.batch << " T=" << p.new_tokens << " heads=" << p.num_heads
      << " kv_heads=" << p.num_kv_heads;
  MISTRAL_CHECK(p.head_dim == 64 || p.head_dim == 128)
      << "head_dim " << p.head_dim << " (64 or 128 supported)";
  MISTRAL_CHECK(p.capacity >= 0 &&
                (p.first_seq_index >= 0 || p.first_seq_index_device != nullptr) &&
                p.sliding_window >= 0)
      << "capacity=" << p.capacity << " first_seq_index=" << p.first_seq_index
      << " sliding_window=" << p.sliding_window;
  MISTRAL_CHECK(p.q && p.k && p.v && p.new_valid && p.out) << "missing attention input";
  MISTRAL_CHECK(p.capacity == 0 || (p.k_cache && p.v_cache && p.slot_seq_index && p.slot_valid))
      << "missing cache";
  check_cache_blocks(p.block_table, p.block_size, p.blocks_per_row, p.capacity);
}

void attention_prefill(KernelContext& ctx, const AttentionParams& p) {
  check_attention_params(p);
  const int64_t rows = p.new_tokens * (p.num_heads / p.num_kv_heads);
  const dim3 grid(static_cast<unsigned>((rows + kBlockRows - 1) / kBlockRows),
                  static_cast<unsigned>(p.num_kv_heads), static_cast<unsigned>(p.batch));
  const float scale_log2 = p.scale * kLog2e;
  if (p.head_dim == 128) {
    launch_kernel(ctx, attention_prefill_kernel<128>, grid, kThreads, 0, p, scale_log2);
  } else {
    launch_kernel(ctx, attention_prefill_kernel<64>, grid, kThreads, 0, p, scale_log2);
  }
  MISTRAL_CUDA_CHECK_LAUNCH();
}

bool uses_decode_attention(const AttentionParams& p) {
  return (p.head_dim == 64 || p.head_dim == 128) &&
         p.new_tokens * (p.num_heads / std::max<int64_t>(1, p.num_kv_heads)) <= kMaxDecodeRows;
}

void attention(KernelContext& ctx, const AttentionParams& p) {
  if (p.head_dim != 64 && p.head_dim != 128) {
    attention_generic(ctx, p);
  } else if (uses_decode_attention(p)) {
    attention_decode(ctx, p);
  } else {
    attention_prefill(ctx, p);
  }
}

}  // namespace mistral::cuda
