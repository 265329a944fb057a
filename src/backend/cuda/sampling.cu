// On-device token selection: one block of 1024 threads per row, so only the chosen ids leave the
// device. The filters reproduce sampling/logits_processing.cc (Hugging Face's warpers) without
// sorting the vocabulary:
//   - values y = logit / temperature (NaN as -inf), keyed by an order-preserving map of float bits
//     to uint32 (-0 taken as +0);
//   - top-k: the k-th largest key by MSB-first radix select (4 rounds of 8-bit histograms);
//     entries below it are removed, ties with it stay;
//   - top-p: HF removes the ascending-sorted prefix whose cumulative probability is <= 1 - top_p.
//     With weights w = exp(y - max) and Z their sum, that prefix is every entry below a value v*
//     plus the first r ties at v* (by ascending id), where v* is the smallest value whose
//     cumulative weight exceeds budget = (1 - top_p) Z. v* is found by the same radix select over
//     weight histograms, ascending, and r = floor((budget - weight below v*) / w(v*)). The weight
//     sums of this step are fixed-point integers (2^-40 units), so they are exact and associative:
//     the cut does not depend on the order of atomic additions and a seed gives the same tokens
//     run to run;
//   - the draw: u from the row's xoshiro256** stream (one output per sampled row, as the CPU
//     Sampler), and the first id whose running sum of kept weights (double, ascending id)
//     exceeds u * total; each thread sums a contiguous chunk of ids and a block scan joins them.
// Greedy rows and rows with nothing left above -inf take the argmax of the raw row.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <cmath>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/kernel_launch.h"
#include "backend/cuda/kernels.h"

namespace mistral::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr double kFixedOne = 1099511627776.0;  // 2^40: weights are at most 1, V * 2^40 < 2^64

__host__ __device__ inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

__device__ uint64_t xoshiro_next(RngState& st) {
  uint64_t* s = st.s;
  const uint64_t result = rotl(s[1] * 5, 7) * 9;
  const uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

__device__ __forceinline__ uint32_t order_key(float x) {
  const uint32_t bits = __float_as_uint(x);
  return (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
}
__device__ __forceinline__ float key_value(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? key & 0x7fffffffu : ~key);
}

// Own functor: cub::Max left CCCL 3, cuda::maximum is missing from older toolkits.
struct MaxOp {
  template <typename T>
  __device__ T operator()(const T& a, const T& b) const {
    return a < b ? b : a;
  }
};

struct ArgMax {
  float value;
  int32_t index;  // -1: none yet
};
struct ArgMaxOp {
  __device__ ArgMax operator()(const ArgMax& a, const ArgMax& b) const {
    if (a.index < 0) return b;
    if (b.index < 0) return a;
    if (a.value != b.value) return a.value > b.value ? a : b;
    return a.index < b.index ? a : b;
  }
};

// Lowest index of the largest non-NaN entry (0 if all are NaN), in every thread.
__device__ int32_t block_argmax(const float* row, int64_t vocab) {
  using Reduce = cub::BlockReduce<ArgMax, kThreads>;
  __shared__ typename Reduce::TempStorage storage;
  __shared__ int32_t result;
  ArgMax best{-INFINITY, -1};
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float x = row[i];
    if (isnan(x)) continue;
    if (best.index < 0 || x > best.value) best = {x, static_cast<int32_t>(i)};
  }
  const ArgMax total = Reduce(storage).Reduce(best, ArgMaxOp());
  if (threadIdx.x == 0) result = total.index < 0 ? 0 : total.index;
  __syncthreads();
  return result;
}

__global__ void __launch_bounds__(kThreads)
    argmax_kernel(const float* __restrict__ logits, int64_t vocab, int32_t* __restrict__ ids) {
  device::begin_after_prior_kernels();
  const int32_t best = block_argmax(logits + blockIdx.x * vocab, vocab);
  if (threadIdx.x == 0) ids[blockIdx.x] = best;
}

struct Shared {
  union {
    cub::BlockReduce<float, kThreads>::TempStorage reduce_f;
    cub::BlockReduce<double, kThreads>::TempStorage reduce_d;
    cub::BlockReduce<unsigned long long, kThreads>::TempStorage reduce_u;
    cub::BlockReduce<int64_t, kThreads>::TempStorage reduce_i;
    cub::BlockScan<double, kThreads>::TempStorage scan_d;
    cub::BlockScan<int64_t, kThreads>::TempStorage scan_i;
  } cub;
  unsigned long long hist[256];  // counts (top-k) or fixed-point weights (top-p)
  double starts[kThreads];       // running weight at the start of each thread's chunk
  uint32_t selected;
  int64_t remaining;
  unsigned long long below;
  double u;
  float max_value;
  double total;
  int64_t last_kept;
  int32_t picked;
};

__global__ void __launch_bounds__(kThreads)
    sample_kernel(const float* __restrict__ logits, int64_t vocab,
                  const SampleParams* __restrict__ params, RngState* __restrict__ states,
                  int32_t* __restrict__ ids) {
  device::begin_after_prior_kernels();
  __shared__ Shared sh;
  const int64_t r = blockIdx.x;
  const float* row = logits + r * vocab;
  const SampleParams prm = params[r];
  const int32_t raw_best = block_argmax(row, vocab);
  if (prm.greedy) {
    if (threadIdx.x == 0) ids[r] = raw_best;
    return;
  }
  if (threadIdx.x == 0) {  // one output of the stream per sampled row, as the CPU Sampler
    RngState st = states[r];
    sh.u = static_cast<double>(xoshiro_next(st) >> 11) * 0x1.0p-53;
    states[r] = st;
  }
  const float temperature = prm.temperature;
  auto value = [&](int64_t i) {
    float x = row[i];
    if (isnan(x)) x = -INFINITY;
    x = x / temperature;
    return x == 0.0f ? 0.0f : x;  // -0 -> +0, so equal values share one key
  };

  // ---- top-k: the k-th largest key; keep keys >= it.
  uint32_t k_threshold = 0;  // every key >= 0
  if (prm.top_k > 0 && prm.top_k < vocab) {
    uint32_t prefix = 0, mask = 0;
    if (threadIdx.x == 0) sh.remaining = prm.top_k;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int i = threadIdx.x; i < 256; i += kThreads) sh.hist[i] = 0;
      __syncthreads();
      for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
        const uint32_t key = order_key(value(i));
        if ((key & mask) == prefix) atomicAdd(&sh.hist[(key >> shift) & 0xffu], 1ull);
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        unsigned long long above = 0;
        int bucket = 0;
        for (int bkt = 255; bkt >= 0; --bkt) {
          if (above + sh.hist[bkt] >= static_cast<unsigned long long>(sh.remaining)) {
            bucket = bkt;
            break;
          }
          above += sh.hist[bkt];
        }
        sh.remaining -= static_cast<int64_t>(above);
        sh.selected = static_cast<uint32_t>(bucket);
      }
      __syncthreads();
      prefix |= sh.selected << shift;
      mask |= 0xffu << shift;
    }
    k_threshold = prefix;
  }
  auto kept_k = [&](float y) { return order_key(y) >= k_threshold; };

  // ---- the largest kept value; all -inf: nothing to draw from.
  float local_max = -INFINITY;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float y = value(i);
    if (kept_k(y)) local_max = fmaxf(local_max, y);
  }
  {
    const float m = cub::BlockReduce<float, kThreads>(sh.cub.reduce_f).Reduce(local_max, MaxOp());
    if (threadIdx.x == 0) sh.max_value = m;
    __syncthreads();
  }
  const float max_value = sh.max_value;
  if (max_value == -INFINITY) {
    if (threadIdx.x == 0) ids[r] = raw_best;
    return;
  }
  auto weight = [&](float y) -> float {  // of an entry kept by top-k
    if (max_value == INFINITY) return y == INFINITY ? 1.0f : 0.0f;
    return y > -INFINITY ? expf(y - max_value) : 0.0f;
  };
  auto fixed = [](float w) {
    return static_cast<unsigned long long>(static_cast<double>(w) * kFixedOne);
  };

  // ---- top-p: the cut value v* and the number of its ties removed.
  uint32_t p_key = 0;        // keys below are removed (0: none)
  int64_t ties_removed = 0;  // of the entries with key == p_key, by ascending id
  if (prm.top_p < 1.0f) {
    unsigned long long local = 0;
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
      const float y = value(i);
      if (kept_k(y)) local += fixed(weight(y));
    }
    const unsigned long long total =
        cub::BlockReduce<unsigned long long, kThreads>(sh.cub.reduce_u).Sum(local);
    const float cut = static_cast<float>(1.0 - static_cast<double>(prm.top_p));
    __shared__ unsigned long long budget_sh;
    if (threadIdx.x == 0) {
      budget_sh =
          static_cast<unsigned long long>(static_cast<double>(cut) * static_cast<double>(total));
      sh.below = 0;
    }
    __syncthreads();
    const unsigned long long budget = budget_sh;
    uint32_t prefix = 0, mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int i = threadIdx.x; i < 256; i += kThreads) sh.hist[i] = 0;
      __syncthreads();
      for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
        const float y = value(i);
        const uint32_t key = order_key(y);
        if (kept_k(y) && (key & mask) == prefix) {
          atomicAdd(&sh.hist[(key >> shift) & 0xffu], fixed(weight(y)));
        }
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        // The first bucket whose cumulative weight passes the budget. Integer sums are exact, so
        // it exists: the buckets of this prefix hold all weight not yet counted below.
        int bucket = -1;
        unsigned long long below = sh.below;
        for (int bkt = 0; bkt < 256; ++bkt) {
          if (below + sh.hist[bkt] > budget) {
            bucket = bkt;
            break;
          }
          below += sh.hist[bkt];
        }
        if (bucket < 0) {  // unreachable with exact sums; keep the largest nonempty bucket
          below = sh.below;
          for (int bkt = 0; bkt < 256; ++bkt) {
            if (sh.hist[bkt] > 0) bucket = bkt;
          }
          for (int bkt = 0; bkt < bucket; ++bkt) below += sh.hist[bkt];
          bucket = std::max(bucket, 0);
        }
        sh.below = below;
        sh.selected = static_cast<uint32_t>(bucket);
      }
      __syncthreads();
      prefix |= sh.selected << shift;
      mask |= 0xffu << shift;
    }
    p_key = prefix;
    const unsigned long long w_star = fixed(weight(key_value(p_key)));
    ties_removed =
        w_star > 0 && budget >= sh.below ? static_cast<int64_t>((budget - sh.below) / w_star) : 0;
  }

  // ---- the draw over contiguous chunks of ids.
  const int64_t chunk = (vocab + kThreads - 1) / kThreads;
  const int64_t c0 = std::min<int64_t>(vocab, threadIdx.x * chunk);
  const int64_t c1 = std::min<int64_t>(vocab, c0 + chunk);
  int64_t tie_offset = 0, ties_total = 0;
  if (ties_removed > 0) {
    int64_t ties = 0;
    for (int64_t i = c0; i < c1; ++i) {
      const float y = value(i);
      ties += kept_k(y) && order_key(y) == p_key;
    }
    cub::BlockScan<int64_t, kThreads>(sh.cub.scan_i).ExclusiveSum(ties, tie_offset);
    __syncthreads();
    ties_total = cub::BlockReduce<int64_t, kThreads>(sh.cub.reduce_i).Sum(ties);
    __shared__ int64_t ties_sh;
    if (threadIdx.x == 0) ties_sh = ties_total;
    __syncthreads();
    ties_total = ties_sh;
    ties_removed = std::min(ties_removed, ties_total - 1);  // the largest entry always stays
  }
  // Weight of entry i after every filter; `rank` counts the ties at v* met so far.
  auto final_weight = [&](int64_t i, int64_t& rank) -> float {
    const float y = value(i);
    if (!kept_k(y)) return 0.0f;
    const uint32_t key = order_key(y);
    if (key < p_key) return 0.0f;
    if (key == p_key && ties_removed > 0 && ++rank <= ties_removed) return 0.0f;
    return weight(y);
  };
  double local = 0.0;
  int64_t last = -1;
  {
    int64_t rank = tie_offset;
    for (int64_t i = c0; i < c1; ++i) {
      const float w = final_weight(i, rank);
      local += w;
      if (w > 0.0f) last = i;
    }
  }
  double excl = 0.0, total = 0.0;
  cub::BlockScan<double, kThreads>(sh.cub.scan_d).ExclusiveSum(local, excl, total);
  // Thread i owns [start_i, start_{i+1}) (the last one up to total): disjoint and covering, even
  // where the scan's sums round differently from start_i + local_i.
  sh.starts[threadIdx.x] = excl;
  __syncthreads();
  const int64_t last_kept =
      cub::BlockReduce<int64_t, kThreads>(sh.cub.reduce_i).Reduce(last, MaxOp());
  if (threadIdx.x == 0) {
    sh.last_kept = last_kept;
    sh.picked = -1;
  }
  __syncthreads();
  const double target = sh.u * total;
  const double end = threadIdx.x + 1 < kThreads ? sh.starts[threadIdx.x + 1] : total;
  if (local > 0.0 && excl <= target && target < end) {
    int64_t rank = tie_offset, pick = -1, last_here = -1;
    double running = excl;
    for (int64_t i = c0; i < c1; ++i) {
      const float w = final_weight(i, rank);
      if (w == 0.0f) continue;
      running += w;
      last_here = i;
      if (running > target) {
        pick = i;
        break;
      }
    }
    sh.picked = static_cast<int32_t>(pick >= 0 ? pick : last_here);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    ids[r] = sh.picked >= 0 ? sh.picked
                            : static_cast<int32_t>(sh.last_kept >= 0 ? sh.last_kept : raw_best);
  }
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

void init_rng(KernelContext& ctx, const uint64_t* seeds_host, int64_t rows, RngState* states) {
  MISTRAL_CHECK(rows >= 0) << rows;
  std::vector<RngState> host(rows);
  for (int64_t i = 0; i < rows; ++i) {
    uint64_t seed = seeds_host[i];
    for (uint64_t& word : host[i].s) word = splitmix64(seed);
  }
  MISTRAL_CUDA_CHECK(cudaMemcpyAsync(states, host.data(), rows * sizeof(RngState),
                                     cudaMemcpyHostToDevice, ctx.stream()));
  MISTRAL_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));  // `host` goes out of scope
}

void argmax(KernelContext& ctx, const float* logits, int64_t rows, int64_t vocab, int32_t* ids) {
  MISTRAL_CHECK(rows >= 0 && vocab > 0) << "argmax rows=" << rows << " vocab=" << vocab;
  if (rows == 0) return;
  launch_kernel(ctx, argmax_kernel, static_cast<unsigned>(rows), kThreads, 0, logits, vocab, ids);
  MISTRAL_CUDA_CHECK_LAUNCH();
}

void sample(KernelContext& ctx, const float* logits, int64_t rows, int64_t vocab,
            const SampleParams* params, RngState* states, int32_t* ids) {
  MISTRAL_CHECK(rows >= 0 && vocab > 0 && vocab < (int64_t{1} << 24))
      << "sample rows=" << rows << " vocab=" << vocab;
  if (rows == 0) return;
  launch_kernel(ctx, sample_kernel, static_cast<unsigned>(rows), kThreads, 0, logits, vocab, params,
                states, ids);
  MISTRAL_CUDA_CHECK_LAUNCH();
}

}  // namespace mistral::cuda
