// The parts of the decode GEMV with fused ops (gemv_fused.cu) around its row streaming: the
// arguments, the prologue that prepares x in shared memory (the norm; for int8 / int4 weights x
// quantized per group of 32), the product of one 16-byte piece of a row, the epilogue that writes
// an output, and the dispatch over the kernel's template arguments. Header-only, for
// gemv_fused.cu (kept apart so that a second kernel for the same contract can share them and give
// the same bits).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/gemv_pieces.cuh"
#include "backend/cuda/kernels.h"

namespace mistral::cuda::fused_gemv {

using namespace device;

// The norm's sum of squares keeps rmsnorm's layout (256 threads, stride 2048) at any block size:
// threads past it add nothing, so the sum has the same bits.
constexpr int kNormThreads = 256;
constexpr int kChunk = 8;  // x values per thread and prologue step: 16 bytes of bf16
// Prologue steps whose loads a thread issues before it uses the first (down's k = 14,336 is 7
// steps; one at a time, each waited for its load). 4 took the quantized kernels to 76-80
// registers, 3 blocks per SM instead of 4.
constexpr int kStepsAtOnce = 2;
constexpr size_t kMaxSharedBytes = 48 << 10;

struct FusedArgs {
  const bf16* x;  // [k]
  int k;
  int64_t n;  // rows of W
  const uint8_t* w;
  const __half* scales;  // quantized formats only
  const bf16* norm;      // [k] or null
  float eps;
};

// Shared memory: the normed x for bf16 weights ([k] bf16), or, for quantized weights, xq [k]
// int8, then dx [k / 32] float and the group sums [k / 32] int.
inline size_t shared_bytes(WeightFormat f, bool norm, int64_t k) {
  if (f == WeightFormat::kBF16) return norm ? static_cast<size_t>(k) * sizeof(bf16) : 0;
  return static_cast<size_t>(k) + static_cast<size_t>(k / kQuantGroup) * 8;
}

__device__ __forceinline__ void load_chunk(const bf16* p, float (&f)[kChunk]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const bf16* e = reinterpret_cast<const bf16*>(&raw);
#pragma unroll
  for (int j = 0; j < kChunk; ++j) f[j] = __bfloat162float(e[j]);
}

// The prologue (see the top of gemv_fused.cu); ends with the block synchronized when it wrote
// shared memory.
template <WeightFormat F, bool kNorm, int kThreads>
__device__ __forceinline__ void prepare_x(const FusedArgs& a, uint8_t* smem) {
  const int tid = threadIdx.x;
  const int chunks = a.k / kChunk;
  float inv = 0.0f;
  if constexpr (kNorm) {
    float sum_sq = 0.0f;
    for (int c0 = tid; tid < kNormThreads && c0 < chunks; c0 += kStepsAtOnce * kNormThreads) {
      float f[kStepsAtOnce][kChunk];
#pragma unroll
      for (int u = 0; u < kStepsAtOnce; ++u) {
        if (c0 + u * kNormThreads < chunks) {
          load_chunk(a.x + (c0 + u * kNormThreads) * kChunk, f[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < kStepsAtOnce; ++u) {
        if (c0 + u * kNormThreads >= chunks) break;
#pragma unroll
        for (int j = 0; j < kChunk; ++j) sum_sq = fmaf(f[u][j], f[u][j], sum_sq);
      }
    }
    inv = 1.0f / sqrtf(block_sum<kThreads>(sum_sq) / static_cast<float>(a.k) + a.eps);
  }
  // x_i as the GEMV consumes it: normed and rounded to bf16 where asked.
  auto value_chunk = [&](int c, float(&f)[kChunk]) {
    load_chunk(a.x + c * kChunk, f);
    if constexpr (kNorm) {
      float w[kChunk];
      load_chunk(a.norm + c * kChunk, w);
#pragma unroll
      for (int j = 0; j < kChunk; ++j) f[j] = round_to<bf16>(w[j] * round_to<bf16>(f[j] * inv));
    }
  };
  if constexpr (F == WeightFormat::kBF16) {
    if constexpr (kNorm) {
      for (int c = tid; c < chunks; c += kThreads) {
        float f[kChunk];
        value_chunk(c, f);
        uint4 packed;
        packed.x = pack_bf16x2(f[0], f[1]);
        packed.y = pack_bf16x2(f[2], f[3]);
        packed.z = pack_bf16x2(f[4], f[5]);
        packed.w = pack_bf16x2(f[6], f[7]);
        reinterpret_cast<uint4*>(smem)[c] = packed;
      }
      __syncthreads();
    }
  } else {
    int8_t* xq = reinterpret_cast<int8_t*>(smem);
    float* dx = reinterpret_cast<float*>(smem + a.k);
    int* xsum = reinterpret_cast<int*>(smem + a.k + (a.k / kQuantGroup) * sizeof(float));
    // Chunk c is part (c % 4) of group c / 4; the 4 parts are adjacent lanes. Every lane takes
    // every step (the shuffles need the whole warp); chunks past the end are zeros, not stored.
    const int steps = (chunks + kThreads - 1) / kThreads;
    for (int s0 = 0; s0 < steps; s0 += kStepsAtOnce) {
      float values[kStepsAtOnce][kChunk] = {};
#pragma unroll
      for (int u = 0; u < kStepsAtOnce; ++u) {
        const int c = tid + (s0 + u) * kThreads;
        if (s0 + u < steps && c < chunks) value_chunk(c, values[u]);
      }
#pragma unroll
      for (int u = 0; u < kStepsAtOnce; ++u) {
        if (s0 + u >= steps) break;  // the same in every thread
        const int c = tid + (s0 + u) * kThreads;
        const bool live = c < chunks;
        const float(&f)[kChunk] = values[u];
        float amax = 0.0f;
#pragma unroll
        for (int j = 0; j < kChunk; ++j) amax = fmaxf(amax, fabsf(f[j]));
        amax = fmaxf(amax, __shfl_xor_sync(kFullMask, amax, 1));
        amax = fmaxf(amax, __shfl_xor_sync(kFullMask, amax, 2));
        int sum = 0;
        uint32_t word[kChunk / 4];
        quantize_x_values(f, amax, word, sum);
        sum += __shfl_xor_sync(kFullMask, sum, 1);
        sum += __shfl_xor_sync(kFullMask, sum, 2);
        if (live) {
          reinterpret_cast<uint2*>(xq)[c] = make_uint2(word[0], word[1]);
          if (c % 4 == 0) {
            dx[c / 4] = x_group_scale(amax);
            xsum[c / 4] = sum;
          }
        }
      }
    }
    __syncthreads();
  }
}

// Outputs of one row group of a block of kW warps (SwiGLU: half the warps take gate rows, half
// the matching up rows), and outputs of W in all (SwiGLU: half its n rows).
template <GemvOutput kOut, int kW>
constexpr int kOutputsPerGroup = kOut == GemvOutput::kSwiGLU ? kW / 2 : kW;
template <GemvOutput kOut>
__host__ __device__ constexpr int64_t output_count(int64_t n) {
  return kOut == GemvOutput::kSwiGLU ? n / 2 : n;
}

// Bytes of one row of W with k columns, and the quantization group (index of its f16 scale in the
// row) of 16-byte piece c: a piece is 16 int8 values (half a group) or 32 int4 values (a group).
template <WeightFormat F>
__host__ __device__ constexpr int row_bytes_of(int k) {
  return F == WeightFormat::kInt8 ? k : F == WeightFormat::kInt4 ? k / 2 : k * 2;
}
template <WeightFormat F>
__host__ __device__ constexpr int piece_group(int c) {
  return F == WeightFormat::kInt8 ? c / 2 : c;
}

// acc plus the product of piece c (16 bytes) of a row of W, with its group scale s (int8 / int4),
// and x as prepare_x left it in `smem` (bf16 weights without a norm read x from global memory).
template <WeightFormat F, bool kNorm>
__device__ __forceinline__ float add_piece(const FusedArgs& a, const uint8_t* smem, int c, uint4 wv,
                                           __half s, float acc) {
  const uint4* xs = reinterpret_cast<const uint4*>(smem);
  if constexpr (F == WeightFormat::kBF16) {
    const uint4 xv = kNorm ? xs[c] : __ldg(reinterpret_cast<const uint4*>(a.x) + c);
    return dot_bf16_piece(wv, xv, acc);
  } else {
    const int k_groups = a.k / kQuantGroup;
    const float* dx = reinterpret_cast<const float*>(smem + a.k);
    const int* xsum = reinterpret_cast<const int*>(smem + a.k + k_groups * sizeof(float));
    const int g = piece_group<F>(c);
    int isum;
    if constexpr (F == WeightFormat::kInt8) {
      isum = dot16(wv, xs[c], 0);
    } else {
      uint4 lo, hi;
      split_nibbles(wv, lo, hi);
      isum = dot16(hi, xs[2 * c + 1], dot16(lo, xs[2 * c], 0)) - 8 * xsum[g];
    }
    return fmaf(float(isum), __half2float(s) * dx[g], acc);
  }
}

// Writes the output of a warp's row sum (lane 0 does; every warp of the row group calls it with
// its sum). SwiGLU: warps 0..P-1 hold the gate sums, warps P..2P-1 the matching up sums, `up` is
// P floats of shared memory and sync() synchronizes those warps (called twice).
template <typename OutT, GemvOutput kOut, int kPerGroup, typename Sync>
__device__ __forceinline__ void store_output(float sum, int warp, int lane, bool valid, int64_t out,
                                             OutT* y, float* up, Sync sync) {
  if constexpr (kOut == GemvOutput::kSwiGLU) {
    if (warp >= kPerGroup && lane == 0) up[warp - kPerGroup] = round_to<bf16>(sum);
    sync();
    if (warp < kPerGroup && valid && lane == 0) {
      const float g = round_to<bf16>(sum);
      y[out] = from_float<OutT>(__fmul_rn(round_to<bf16>(g / (1.0f + expf(-g))), up[warp]));
    }
    sync();  // up[] is written again for the next group
  } else if (valid && lane == 0) {
    if constexpr (kOut == GemvOutput::kAddTo) {
      y[out] = from_float<OutT>(__fadd_rn(to_float(y[out]), round_to<OutT>(sum)));
    } else {
      y[out] = from_float<OutT>(sum);
    }
  }
}

// Blocks of the kernel that fit one SM at once with `threads` threads and `shared` bytes of
// dynamic shared memory (asked of the runtime once per kernel and size).
inline int resident_blocks(const void* kernel, int threads, size_t shared) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, size_t>, int> known;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = known.find({kernel, shared});
  if (it == known.end()) {
    int blocks = 0;
    MISTRAL_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, shared));
    it = known.emplace(std::make_pair(kernel, shared), std::max(1, blocks)).first;
  }
  return it->second;
}

// fn(format, norm, output) with each as a std::integral_constant: the kernels' template
// arguments for a weight format, a norm or none, and an output (float y: kStore only).
template <typename OutT, typename Fn>
void dispatch(WeightFormat format, bool norm, GemvOutput output, Fn&& fn) {
  auto with_output = [&](auto f, auto has_norm) {
    using Out = std::integral_constant<GemvOutput, GemvOutput::kStore>;
    if constexpr (std::is_same_v<OutT, float>) {
      MISTRAL_CHECK(output == GemvOutput::kStore) << "gemv_fused: float output only stores";
      return fn(f, has_norm, Out());
    } else {
      switch (output) {
        case GemvOutput::kStore:
          return fn(f, has_norm, Out());
        case GemvOutput::kAddTo:
          return fn(f, has_norm, std::integral_constant<GemvOutput, GemvOutput::kAddTo>());
        case GemvOutput::kSwiGLU:
          return fn(f, has_norm, std::integral_constant<GemvOutput, GemvOutput::kSwiGLU>());
      }
    }
  };
  auto with_norm = [&](auto f) {
    if (norm) return with_output(f, std::true_type());
    with_output(f, std::false_type());
  };
  switch (format) {
    case WeightFormat::kBF16:
      return with_norm(std::integral_constant<WeightFormat, WeightFormat::kBF16>());
    case WeightFormat::kInt8:
      return with_norm(std::integral_constant<WeightFormat, WeightFormat::kInt8>());
    case WeightFormat::kInt4:
      return with_norm(std::integral_constant<WeightFormat, WeightFormat::kInt4>());
  }
}

}  // namespace mistral::cuda::fused_gemv
