// Element-wise and row-wise ops: RMSNorm (optionally fused with the residual add), rotary
// embeddings, SwiGLU's silu(gate) * up, add, embedding gather. Memory-bound; rows whose length
// and pointers allow it move 16 bytes per access, others one element at a time.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/kernel_launch.h"
#include "backend/cuda/kernels.h"

namespace mistral::cuda {
namespace {

using namespace device;

template <typename T>
constexpr int kVec = 16 / sizeof(T);  // elements per 16-byte access

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// V elements at p as float: one 16-byte access when V * sizeof(T) == 16.
template <typename T, int V>
__device__ __forceinline__ void load_vec(const T* p, float (&f)[V]) {
  if constexpr (V * sizeof(T) == 16) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < V; ++i) f[i] = to_float(e[i]);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) f[i] = to_float(p[i]);
  }
}

template <typename T, int V>
__device__ __forceinline__ void store_vec(T* p, const float (&f)[V]) {
  if constexpr (V * sizeof(T) == 16) {
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int i = 0; i < V; ++i) e[i] = from_float<T>(f[i]);
    *reinterpret_cast<uint4*>(p) = raw;
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) p[i] = from_float<T>(f[i]);
  }
}

constexpr int kNormThreads = 256;

// One block per row. With `delta`, residual = residual + delta first (rounded to T) and the
// norm reads that; each thread re-reads only elements it wrote itself, and writes y only at
// elements it read delta at (before the block-wide sum), so y may be delta.
template <typename T, int V>
__global__ void __launch_bounds__(kNormThreads)
    rmsnorm_kernel(const T* __restrict__ x, T* residual, const T* delta, int64_t n,
                   const T* __restrict__ weight, float eps, T* y) {
  device::begin_after_prior_kernels();
  const int64_t row = blockIdx.x;
  const T* xr = (delta != nullptr ? residual : x) + row * n;
  float sum_sq = 0.0f;
  for (int64_t i = int64_t(threadIdx.x) * V; i < n; i += int64_t(kNormThreads) * V) {
    float f[V];
    load_vec<T, V>(xr + i, f);
    if (delta != nullptr) {
      float d[V];
      load_vec<T, V>(delta + row * n + i, d);
#pragma unroll
      for (int j = 0; j < V; ++j) f[j] = round_to<T>(f[j] + d[j]);
      store_vec<T, V>(residual + row * n + i, f);
    }
#pragma unroll
    for (int j = 0; j < V; ++j) sum_sq = fmaf(f[j], f[j], sum_sq);
  }
  const float inv = 1.0f / sqrtf(block_sum<kNormThreads>(sum_sq) / static_cast<float>(n) + eps);
  for (int64_t i = int64_t(threadIdx.x) * V; i < n; i += int64_t(kNormThreads) * V) {
    float f[V], w[V];
    load_vec<T, V>(xr + i, f);
    load_vec<T, V>(weight + i, w);
#pragma unroll
    for (int j = 0; j < V; ++j) f[j] = w[j] * round_to<T>(f[j] * inv);
    store_vec<T, V>(y + row * n + i, f);
  }
}

template <typename T>
void launch_rmsnorm(KernelContext& ctx, const T* x, T* residual, const T* delta, int64_t m,
                    int64_t n, const T* weight, float eps, T* y) {
  MISTRAL_CHECK(m >= 0 && n > 0) << "rmsnorm m=" << m << " n=" << n;
  if (m == 0) return;
  const bool vec = n % kVec<T> == 0 && aligned16(weight) && aligned16(y) &&
                   aligned16(delta != nullptr ? delta : x) &&
                   (residual == nullptr || aligned16(residual));
  if (vec) {
    launch_kernel(ctx, rmsnorm_kernel<T, kVec<T>>, static_cast<unsigned>(m), kNormThreads, 0, x,
                  residual, delta, n, weight, eps, y);
  } else {
    launch_kernel(ctx, rmsnorm_kernel<T, 1>, static_cast<unsigned>(m), kNormThreads, 0, x, residual,
                  delta, n, weight, eps, y);
  }
  MISTRAL_CUDA_CHECK_LAUNCH();
}

// One thread per (token, head, i < d/2) pair, `chunks` blocks per token; heads [0, heads) are
// rows of x, heads [heads, heads + heads2) rows of x2 (k next to q: one launch for both). (One
// block per token, its threads looping over the pairs, took 6.4 us for a decode token of
// Mistral-7B on an H200: a chain of dependent loads per thread.)
template <typename T>
__global__ void rope_kernel(T* x, int64_t heads, T* x2, int64_t heads2, int64_t head_dim,
                            const int64_t* __restrict__ positions,
                            const float* __restrict__ inv_freq, int chunks) {
  device::begin_after_prior_kernels();
  const int64_t token = blockIdx.x / chunks;
  const int64_t half = head_dim / 2;
  const float pos = static_cast<float>(positions[token]);
  const int64_t first = int64_t(blockIdx.x % chunks) * blockDim.x + threadIdx.x;
  for (int64_t idx = first; idx < (heads + heads2) * half; idx += int64_t(chunks) * blockDim.x) {
    const int64_t h = idx / half, i = idx % half;
    rotate_pair(h < heads ? x + (token * heads + h) * head_dim
                          : x2 + (token * heads2 + (h - heads)) * head_dim,
                i, half, pos, inv_freq);
  }
}

template <typename T, int V>
__global__ void silu_mul_kernel(const T* __restrict__ gate, const T* __restrict__ up,
                                T* __restrict__ out, int64_t n) {
  device::begin_after_prior_kernels();
  for (int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * V; i < n;
       i += int64_t(gridDim.x) * blockDim.x * V) {
    float g[V], u[V];
    load_vec<T, V>(gate + i, g);
    load_vec<T, V>(up + i, u);
#pragma unroll
    for (int j = 0; j < V; ++j) g[j] = __fmul_rn(round_to<T>(g[j] / (1.0f + expf(-g[j]))), u[j]);
    store_vec<T, V>(out + i, g);
  }
}

template <typename T, int V>
__global__ void add_kernel(T* x, const T* __restrict__ y, int64_t n) {
  device::begin_after_prior_kernels();
  for (int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * V; i < n;
       i += int64_t(gridDim.x) * blockDim.x * V) {
    float a[V], b[V];
    load_vec<T, V>(x + i, a);
    load_vec<T, V>(y + i, b);
#pragma unroll
    for (int j = 0; j < V; ++j) a[j] = __fadd_rn(a[j], b[j]);
    store_vec<T, V>(x + i, a);
  }
}

// One block per row. V = 8: 16-byte pieces of the table (hidden % 8 == 0, table and out 16-byte
// aligned), a thread's kAtOnce pieces all loaded before the first store, so a row is one trip to
// memory (the loop of 2-byte copies took ~9 us for one decode token on an H100). V = 1: element
// by element. Bad ids give zeros.
template <typename T, int V>
__global__ void embed_kernel(const bf16* __restrict__ table, int64_t vocab, int64_t hidden,
                             const int32_t* __restrict__ ids, T* __restrict__ out) {
  constexpr int kAtOnce = 4;
  using Piece = std::conditional_t<V == 8, uint4, bf16>;
  device::begin_after_prior_kernels();
  const int64_t row = blockIdx.x;
  const int32_t id = ids[row];
  const bool ok = id >= 0 && id < vocab;
  const Piece* src = reinterpret_cast<const Piece*>(table + int64_t(ok ? id : 0) * hidden);
  const int64_t pieces = hidden / V;
  for (int64_t base = threadIdx.x; base < pieces; base += kAtOnce * blockDim.x) {
    Piece p[kAtOnce];
#pragma unroll
    for (int u = 0; u < kAtOnce; ++u) {
      const int64_t i = base + u * blockDim.x;
      p[u] = ok && i < pieces ? src[i] : Piece{};
    }
#pragma unroll
    for (int u = 0; u < kAtOnce; ++u) {
      const int64_t i = base + u * blockDim.x;
      if (i >= pieces) break;
      const bf16* e = reinterpret_cast<const bf16*>(&p[u]);
      T* dst = out + row * hidden + i * V;
      if constexpr (V == 8 && std::is_same_v<T, bf16>) {
        *reinterpret_cast<uint4*>(dst) = p[u];
      } else if constexpr (V == 8) {
        float f[8];
        unpack_bf16x8(p[u], f);
        *reinterpret_cast<float4*>(dst) = make_float4(f[0], f[1], f[2], f[3]);
        *reinterpret_cast<float4*>(dst + 4) = make_float4(f[4], f[5], f[6], f[7]);
      } else {
        dst[0] = from_float<T>(__bfloat162float(e[0]));
      }
    }
  }
}

// Enough blocks of 256 threads to cover n / V packs, at most 8 per SM (grid-stride beyond).
unsigned elementwise_blocks(const KernelContext& ctx, int64_t packs) {
  const int64_t blocks = (packs + 255) / 256;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 8 * ctx.num_sms())));
}

}  // namespace

std::vector<float> rope_inv_freq(int64_t head_dim, double theta) {
  MISTRAL_CHECK(head_dim > 0 && head_dim % 2 == 0) << "head_dim " << head_dim;
  std::vector<float> inv_freq(head_dim / 2);
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[i] = 1.0f / std::pow(static_cast<float>(theta), exponent);
  }
  return inv_freq;
}

template <typename T>
void rmsnorm(KernelContext& ctx, const T* x, int64_t m, int64_t n, const T* weight, float eps,
             T* y) {
  launch_rmsnorm<T>(ctx, x, nullptr, nullptr, m, n, weight, eps, y);
}

template <typename T>
void add_rmsnorm(KernelContext& ctx, T* residual, const T* delta, int64_t m, int64_t n,
                 const T* weight, float eps, T* y) {
  launch_rmsnorm<T>(ctx, nullptr, residual, delta, m, n, weight, eps, y);
}

template <typename T>
void rope_qk(KernelContext& ctx, T* q, T* k, int64_t tokens, int64_t heads, int64_t kv_heads,
             int64_t head_dim, const int64_t* positions, const float* inv_freq) {
  MISTRAL_CHECK(head_dim > 0 && head_dim % 2 == 0 && heads > 0 && kv_heads >= 0 && tokens >= 0)
      << "rope tokens=" << tokens << " heads=" << heads << " kv_heads=" << kv_heads
      << " head_dim=" << head_dim;
  if (tokens == 0) return;
  const int64_t pairs = (heads + kv_heads) * head_dim / 2;
  constexpr int kThreads = 128;
  const int chunks = static_cast<int>((pairs + kThreads - 1) / kThreads);
  launch_kernel(ctx, rope_kernel<T>, static_cast<unsigned>(tokens * chunks), kThreads, 0, q, heads,
                k, kv_heads, head_dim, positions, inv_freq, chunks);
  MISTRAL_CUDA_CHECK_LAUNCH();
}

template <typename T>
void rope(KernelContext& ctx, T* x, int64_t tokens, int64_t heads, int64_t head_dim,
          const int64_t* positions, const float* inv_freq) {
  rope_qk<T>(ctx, x, nullptr, tokens, heads, 0, head_dim, positions, inv_freq);
}

template <typename T>
void silu_mul(KernelContext& ctx, const T* gate, const T* up, T* out, int64_t n) {
  MISTRAL_CHECK(n >= 0) << n;
  if (n == 0) return;
  if (n % kVec<T> == 0 && aligned16(gate) && aligned16(up) && aligned16(out)) {
    launch_kernel(ctx, silu_mul_kernel<T, kVec<T>>, elementwise_blocks(ctx, n / kVec<T>), 256, 0,
                  gate, up, out, n);
  } else {
    launch_kernel(ctx, silu_mul_kernel<T, 1>, elementwise_blocks(ctx, n), 256, 0, gate, up, out, n);
  }
  MISTRAL_CUDA_CHECK_LAUNCH();
}

template <typename T>
void add(KernelContext& ctx, T* x, const T* y, int64_t n) {
  MISTRAL_CHECK(n >= 0) << n;
  if (n == 0) return;
  if (n % kVec<T> == 0 && aligned16(x) && aligned16(y)) {
    launch_kernel(ctx, add_kernel<T, kVec<T>>, elementwise_blocks(ctx, n / kVec<T>), 256, 0, x, y,
                  n);
  } else {
    launch_kernel(ctx, add_kernel<T, 1>, elementwise_blocks(ctx, n), 256, 0, x, y, n);
  }
  MISTRAL_CUDA_CHECK_LAUNCH();
}

template <typename T>
void embed(KernelContext& ctx, const bf16* table, int64_t vocab, int64_t hidden, const int32_t* ids,
           int64_t n, T* out) {
  MISTRAL_CHECK(vocab > 0 && hidden > 0 && n >= 0)
      << "embed vocab=" << vocab << " hidden=" << hidden << " n=" << n;
  if (n == 0) return;
  const bool pieces =
      hidden % 8 == 0 &&
      (reinterpret_cast<uintptr_t>(table) | reinterpret_cast<uintptr_t>(out)) % 16 == 0;
  launch_kernel(ctx, pieces ? embed_kernel<T, 8> : embed_kernel<T, 1>, static_cast<unsigned>(n),
                256, 0, table, vocab, hidden, ids, out);
  MISTRAL_CUDA_CHECK_LAUNCH();
}

#define MISTRAL_INSTANTIATE(T)                                                                   \
  template void rmsnorm<T>(KernelContext&, const T*, int64_t, int64_t, const T*, float, T*);     \
  template void add_rmsnorm<T>(KernelContext&, T*, const T*, int64_t, int64_t, const T*, float,  \
                               T*);                                                              \
  template void rope<T>(KernelContext&, T*, int64_t, int64_t, int64_t, const int64_t*,           \
                        const float*);                                                           \
  template void rope_qk<T>(KernelContext&, T*, T*, int64_t, int64_t, int64_t, int64_t,           \
                           const int64_t*, const float*);                                        \
  template void silu_mul<T>(KernelContext&, const T*, const T*, T*, int64_t);                    \
  template void add<T>(KernelContext&, T*, const T*, int64_t);                                   \
  template void embed<T>(KernelContext&, const bf16*, int64_t, int64_t, const int32_t*, int64_t, \
                         T*);
MISTRAL_INSTANTIATE(float)
MISTRAL_INSTANTIATE(bf16)
#undef MISTRAL_INSTANTIATE

}  // namespace mistral::cuda
