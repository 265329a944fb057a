// persistent_layer_bench: how fast Mistral-7B's batch-1 decode layers could run as one persistent
// kernel that streams every weight through a shared-memory ring, against the same bytes at the
// card's read rate. The question it answers before anyone builds that kernel into the engine: does
// a ring that keeps filling through the layer's grid barriers and through attention (which reads
// ~2.6 MB but takes ~12 us, bench/RESULTS.md) bring a layer near its bytes' time?
//
// The engine's decode step runs 5 kernels a layer (q|k|v, attention, o, gate|up, down) chained by
// programmatic dependent launch. A kernel's blocks hold one round of weight loads (2 KB a warp) in
// registers while they wait for the kernel before, so DRAM idles through each boundary, each
// prologue (the read of x) and most of attention: about 20 us of a 60 us int4 layer on an H100.
//
// The kernel here: 2 blocks per SM (a cooperative launch, so all are resident), each 16 consumer
// warps and one producer warp. The producer copies the block's weights of every phase of every
// layer, in the order the consumers use them, into a ring of 8 KB slots (int4: and their scales)
// with cp.async.bulk (sm_90), each slot on a "full" mbarrier; it waits only for a slot to
// be "empty" again, never for the grid. So while the consumers sit at a grid barrier or in
// attention, the ring fills with what comes next: up to slots x 8 KB a block (~25 MB over the
// GPU at 9 slots, ~7.5 us of DRAM at 3.35 TB/s).
// Per layer, the consumers run the phases of the engine's fused decode path, each after a grid
// barrier (a counter per phase, as boundary_bench's counter spin):
//  0. q|k|v: [6144, 4096] @ rmsnorm(h);
//  1. the attention stand-in (below);
//  2. o: [4096, 4096] @ attention's output, h += that;
//  3. gate|up: [2 x 14336, 4096] @ rmsnorm(h), silu(gate) * up;
//  4. down: [4096, 14336] @ that, h += the result.
// Each GEMV phase gives block b the contiguous rows [n b / G, n (b + 1) / G) (gate|up: those gate
// rows and the same up rows). Its prologue reads x from L2 and, for int4, quantizes it per group
// of 32 into shared memory as the engine's GEMV does (amax, int8, group sums; bf16 keeps x as
// bf16 after the norm). Two layouts of a slot:
//  - chunks: 8 KB of the block's rows as stored, one bulk copy (int4: two). A consumer thread
//    takes one 16-byte piece of each slot (int4: one group of 32 weights, 8 dp4a; bf16: 8
//    products); a warp's 32 pieces are in one row, so each warp sums them and adds the sum to its
//    row in shared memory;
//  - rows: 512 bytes of each of 16 rows, one a consumer warp, copied as 16 segments by the
//    producer warp's lanes (see produce_rows): a warp owns whole rows and sums them as the
//    engine's GEMV does, bit for bit possible, and the weights need no re-layout.
// The numbers it computes are meaningless (the weights are a byte pattern); the instruction mix
// and the memory traffic are the engine's.
// Attention stand-in: every block reads 1 KB of q|k|v's output and its share of a 2.6 MB buffer
// (the 7B's cache at 641 positions), then waits until a set time (0, 4 or 8 us) has passed since
// the phase began (the latency chain of the real kernel, which this does not reproduce), then
// writes its share of the 4096 outputs. Or ("real") a decode attention of its own over such a
// cache: a block per (kv head, 32 keys), partials merged by each kv head's last block
// (attention_real), to see how long attention takes in this form and how much of it the ring
// hides.
//
// Printed: microseconds per layer (32 layers a launch, best of 3 after a warm-up), the weight
// bytes' rate, and that as a fraction of a plain read of the same weights measured in the run;
// with 9 slots also the last layer's timeline (each phase's entry and end, blocks 0 and G - 1).
// Configurations: int4 and bf16; both layouts; ring slots 2 (about the registers' round), 5 and
// 9; attention 0, 4 and 8 us and real; and rows, 9 slots, real attention with a launch a layer
// (what a per-layer fused op would give: no ring across layers, a launch between them). Each launch
// checks that its consumers took every weight piece once.
//
// Usage: persistent_layer_bench [--layers N]. Built with the other benchmarks, for sm_90 only.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/device_util.cuh"
#include "bulk_copy.cuh"

namespace {

using mistral::cuda::DeviceBuffer;
namespace device = mistral::cuda::device;

constexpr int kConsumerWarps = 16;
constexpr int kConsumers = kConsumerWarps * 32;
constexpr int kThreads = kConsumers + 32;  // and the producer warp
constexpr int kSlotPieces = kConsumers;    // 16-byte pieces of weights in a slot: one a consumer
constexpr int kSlotBytes = kSlotPieces * 16;
constexpr int kSlotScaleBytes = kSlotPieces * 2;  // int4: a f16 scale a piece (group of 32)
constexpr int kMaxSlots = 9;
constexpr int kPhases = 5;
constexpr int kHidden = 4096, kInter = 14336, kQkv = 6144;
constexpr int kMaxRows = 128;  // rows of one region a block may take (checked on the host)
constexpr long kCacheBytes = 641L * 8 * 128 * 2 * 2;
constexpr int kGroup = 32;
// The real attention phase (attention_ns < 0): the 7B's decode attention at kKeys positions, one
// block per (kv head, chunk of 32 keys).
constexpr int kKvHeads = 8, kQueryRows = 4, kHeadDim = 128, kKeys = 641, kChunkKeys = 32;
constexpr int kSplits = (kKeys + kChunkKeys - 1) / kChunkKeys;
static_assert(kCacheBytes == 2L * kKeys * kKvHeads * kHeadDim * 2, "the cache is K, then V");

enum class Format { kInt4, kBF16 };

// One matrix of all layers: layer l's rows start at w + l * n * pieces_per_row.
struct Matrix {
  const uint4* w;
  const __half* scales;  // int4 only: [layers][n][k / 32]
  int n, k;
};

struct Model {
  Matrix qkv, o, gate_up, down;
  const uint4* cache;  // kCacheBytes, the attention stand-in's reads
};

struct Activations {
  __nv_bfloat16 *h, *qkv, *attn, *act;  // [4096], [6144], [4096], [14336]
  unsigned* counters;                   // [layers * kPhases], zero at launch
  unsigned long long* consumed;         // weight pieces the consumers took, zero at launch
  unsigned long long* stamps;           // [2][kPhases][2]: see stamp
  unsigned* merges;    // [layers][kKvHeads], zero at launch: attention's splits done
  float* partial_acc;  // [kKvHeads][kSplits][kQueryRows][kHeadDim]
  float* partial_ml;   // [kKvHeads][kSplits][kQueryRows][2]: max, sum
};

template <Format F>
__host__ __device__ constexpr int pieces_per_row(int k) {
  return F == Format::kInt4 ? k / kGroup : k / 8;
}

// The rows block b of `blocks` takes of a GEMV phase's outputs.
__device__ __forceinline__ void my_rows(int outputs, int& first, int& count) {
  first = int(long(outputs) * blockIdx.x / gridDim.x);
  count = int(long(outputs) * (blockIdx.x + 1) / gridDim.x) - first;
}

// The regions of a phase (1, or 2 for gate|up) as (matrix, first row, rows), in stream order.
struct Region {
  Matrix m;
  int row, rows;
};
__device__ __forceinline__ int phase_regions(const Model& model, int phase, Region (&r)[2]) {
  int first, count;
  switch (phase) {
    case 0:
      my_rows(kQkv, first, count);
      r[0] = {model.qkv, first, count};
      return 1;
    case 2:
      my_rows(kHidden, first, count);
      r[0] = {model.o, first, count};
      return 1;
    case 3:
      my_rows(kInter, first, count);
      r[0] = {model.gate_up, first, count};
      r[1] = {model.gate_up, kInter + first, count};
      return 2;
    case 4:
      my_rows(kHidden, first, count);
      r[0] = {model.down, first, count};
      return 1;
    default:
      return 0;
  }
}

struct Shared {
  uint64_t full[kMaxSlots], empty[kMaxSlots];
  float rows[2 * kMaxRows];
  float partial[kConsumerWarps];
  int last;  // real attention: this block merges its kv head's splits
};

__device__ __forceinline__ void consumers_sync() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(kConsumers) : "memory");
}

// Thread 0 of the consumers waits until every block has counted itself out of phase q.
__device__ __forceinline__ void grid_wait(const unsigned* counters, int q) {
  if (q >= 0 && threadIdx.x == 0) device::spin_until_count(counters + q, gridDim.x);
  consumers_sync();
}

// An mbarrier phase of `parity` completed (bulk_copy.cuh's barrier_wait traps after 2 s).
__device__ __forceinline__ void slot_wait(const uint64_t& bar, uint32_t parity) {
  device::barrier_wait(device::shared_address(&bar), parity);
}
__device__ __forceinline__ void grid_arrive(unsigned* counters, int q) {
  consumers_sync();
  if (threadIdx.x == 0) device::count_in(counters + q);
}

__device__ __forceinline__ float consumers_sum(float v, Shared& s) {
  v = device::warp_sum(v);
  if (threadIdx.x % 32 == 0) s.partial[threadIdx.x / 32] = v;
  consumers_sync();
  float total = 0.0f;
#pragma unroll
  for (int w = 0; w < kConsumerWarps; ++w) total += s.partial[w];
  consumers_sync();
  return total;
}

// The prologue: x (k bf16 from L2), normed when asked, into shared memory as the phase's dot
// products read it: int4, xq in two planes of k / 2 bytes (a group's 16 low-nibble partners,
// then its 16 high), the group scales and integer sums; bf16, x itself.
template <Format F>
__device__ void prepare_x(const __nv_bfloat16* x, int k, bool norm, uint8_t* area, Shared& s) {
  const int t = threadIdx.x, chunks = k / 8;
  float inv = 1.0f;
  if (norm) {
    float sq = 0.0f;
    for (int c = t; c < chunks; c += kConsumers) {
      float f[8];
      device::unpack_bf16x8(__ldcg(reinterpret_cast<const uint4*>(x) + c), f);
#pragma unroll
      for (int j = 0; j < 8; ++j) sq = fmaf(f[j], f[j], sq);
    }
    inv = rsqrtf(consumers_sum(sq, s) / float(k) + 1e-5f);
  }
  for (int c = t; c < chunks; c += kConsumers) {  // kConsumers is a multiple of 4: whole groups
    float f[8];
    device::unpack_bf16x8(__ldcg(reinterpret_cast<const uint4*>(x) + c), f);
#pragma unroll
    for (int j = 0; j < 8; ++j) f[j] *= inv;
    if constexpr (F == Format::kBF16) {
      reinterpret_cast<uint4*>(area)[c] = device::pack_bf16x8(f);
    } else {
      float amax = 0.0f;
#pragma unroll
      for (int j = 0; j < 8; ++j) amax = fmaxf(amax, fabsf(f[j]));
      amax = fmaxf(amax, __shfl_xor_sync(device::kFullMask, amax, 1));
      amax = fmaxf(amax, __shfl_xor_sync(device::kFullMask, amax, 2));
      const float q = amax > 0.0f ? 127.0f / amax : 0.0f;
      uint32_t word[2];
      int sum = 0;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        uint32_t packed = 0;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int v = __float2int_rn(f[4 * h + j] * q);
          sum += v;
          packed |= uint32_t(v & 0xff) << (8 * j);
        }
        word[h] = packed;
      }
      sum += __shfl_xor_sync(device::kFullMask, sum, 1);
      sum += __shfl_xor_sync(device::kFullMask, sum, 2);
      const int group = c / 4, part = c % 4;
      uint2* planes = reinterpret_cast<uint2*>(area);
      planes[(part / 2) * (k / 16) + group * 2 + part % 2] = make_uint2(word[0], word[1]);
      if (part == 0) {
        float* dx = reinterpret_cast<float*>(area + k);
        int* xsum = reinterpret_cast<int*>(area + k + (k / kGroup) * 4);
        dx[group] = amax / 127.0f;
        xsum[group] = sum;
      }
    }
  }
  consumers_sync();
}

// One piece's product with x: int4, 32 weights of group g (low nibbles against plane 0, high
// against plane 1, offset 8 taken off through the group sum) times scale x dx; bf16, 8 weights.
template <Format F>
__device__ __forceinline__ float piece_dot(uint4 w, __half scale, int g, int k,
                                           const uint8_t* area) {
  if constexpr (F == Format::kInt4) {
    const uint4* planes = reinterpret_cast<const uint4*>(area);
    const uint4 xl = planes[g], xh = planes[k / 32 + g];
    const uint32_t m = 0x0f0f0f0fu;
    int acc = 0;
    acc = __dp4a(int(w.x & m), int(xl.x), acc);
    acc = __dp4a(int(w.y & m), int(xl.y), acc);
    acc = __dp4a(int(w.z & m), int(xl.z), acc);
    acc = __dp4a(int(w.w & m), int(xl.w), acc);
    acc = __dp4a(int((w.x >> 4) & m), int(xh.x), acc);
    acc = __dp4a(int((w.y >> 4) & m), int(xh.y), acc);
    acc = __dp4a(int((w.z >> 4) & m), int(xh.z), acc);
    acc = __dp4a(int((w.w >> 4) & m), int(xh.w), acc);
    const float* dx = reinterpret_cast<const float*>(area + k);
    const int* xsum = reinterpret_cast<const int*>(area + k + (k / kGroup) * 4);
    return float(acc - 8 * xsum[g]) * (__half2float(scale) * dx[g]);
  } else {
    float a[8], b[8];
    device::unpack_bf16x8(w, a);
    device::unpack_bf16x8(reinterpret_cast<const uint4*>(area)[g], b);
    float acc = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) acc = fmaf(a[j], b[j], acc);
    return acc;
  }
}

template <Format F>
__device__ __forceinline__ const uint4* region_weights(const Region& r, int layer) {
  const long ppr = pieces_per_row<F>(r.m.k);
  return r.m.w + (long(layer) * r.m.n + r.row) * ppr;
}
__device__ __forceinline__ const __half* region_scales(const Region& r, int layer) {
  const long groups = r.m.k / kGroup;
  return r.m.scales + (long(layer) * r.m.n + r.row) * groups;
}

// The last layer's timeline, as seen by blocks 0 and G - 1 (thread 0): %globaltimer when each
// phase's grid barrier let it in (index 2 phase) and when its work was done (2 phase + 1).
__device__ __forceinline__ void stamp(const Activations& a, bool last_layer, int index) {
  const bool first = blockIdx.x == 0, final = blockIdx.x == gridDim.x - 1;
  if (last_layer && threadIdx.x == 0 && (first || final)) {
    a.stamps[(first ? 0 : 2 * kPhases) + index] = device::now_ns();
  }
}

// The producer (one thread): every slot of every GEMV phase of every layer, in order.
template <Format F>
__device__ void produce(const Model& model, int first_layer, int end_layer, int slots,
                        uint8_t* ring, Shared& s) {
  const uint64_t policy = device::l2_policy(true);
  uint32_t i = 0;
  for (int layer = first_layer; layer < end_layer; ++layer) {
    for (int phase = 0; phase < kPhases; ++phase) {
      Region regions[2];
      const int count = phase_regions(model, phase, regions);
      for (int ri = 0; ri < count; ++ri) {
        const Region& r = regions[ri];
        const long total = long(r.rows) * pieces_per_row<F>(r.m.k);
        const uint4* w = region_weights<F>(r, layer);
        const __half* sc = F == Format::kInt4 ? region_scales(r, layer) : nullptr;
        for (long p0 = 0; p0 < total; p0 += kSlotPieces, ++i) {
          const int slot = int(i % slots);
          const uint32_t pieces = uint32_t(min(long(kSlotPieces), total - p0));
          slot_wait(s.empty[slot], ((i / slots) & 1) ^ 1);
          const uint32_t full = device::shared_address(&s.full[slot]);
          const uint32_t scale_bytes = F == Format::kInt4 ? pieces * 2 : 0;
          device::barrier_expect_bytes(full, pieces * 16 + scale_bytes);
          device::bulk_copy(device::shared_address(ring + slot * kSlotBytes), w + p0, pieces * 16,
                            full, policy);
          if constexpr (F == Format::kInt4) {
            uint8_t* scale_ring = ring + slots * kSlotBytes;
            device::bulk_copy(device::shared_address(scale_ring + slot * kSlotScaleBytes), sc + p0,
                              scale_bytes, full, policy);
          }
        }
      }
    }
  }
}

// The rows layout (kWarpRows): a block's rows of a phase in groups of 16, one a consumer warp
// (gate|up: warps 0-7 take 8 gate rows, warps 8-15 the same 8 up rows, as the engine's SwiGLU
// GEMV does), and a slot holds 32 pieces (512 bytes) of each of the group's 16 rows, copied as 16
// segments (int4: and 16 of 64 bytes of scales) by the producer warp's lanes. A warp then owns
// whole rows and sums them in its lanes as the engine's GEMV does, with no re-layout of the
// weights; the cost is 16-32 bulk copies a slot instead of 1-2.
struct GroupRow {
  long row;   // in the matrix
  int local;  // in Shared::rows
  bool valid;
};
__device__ __forceinline__ int row_groups(const Region (&r)[2], int count) {
  return count == 2 ? (r[0].rows + 7) / 8 : (r[0].rows + 15) / 16;
}
__device__ __forceinline__ GroupRow group_row(const Region (&r)[2], int count, int g, int warp) {
  if (count == 2) {
    const int local = g * 8 + warp % 8;
    const int half = warp >= 8 ? 1 : 0;
    return {long(half ? r[1].row : r[0].row) + local, half * kMaxRows + local, local < r[0].rows};
  }
  const int local = g * 16 + warp;
  return {long(r[0].row) + local, local, local < r[0].rows};
}
// The group's rows with weights (the same in every lane).
__device__ __forceinline__ int valid_rows(const Region (&r)[2], int count, int g) {
  int n = 0;
  for (int w = 0; w < kConsumerWarps; ++w) n += group_row(r, count, g, w).valid ? 1 : 0;
  return n;
}

// The producer warp in the rows layout: every slot of every GEMV phase of every layer, in order.
template <Format F>
__device__ void produce_rows(const Model& model, int first_layer, int end_layer, int slots,
                             uint8_t* ring, Shared& s) {
  const int lane = threadIdx.x % 32;
  const uint64_t policy = device::l2_policy(true);
  uint8_t* scale_ring = ring + slots * kSlotBytes;
  constexpr uint32_t kRowBytes = 32 * 16 + (F == Format::kInt4 ? 32 * 2 : 0);
  uint32_t i = 0;
  for (int layer = first_layer; layer < end_layer; ++layer) {
    for (int phase = 0; phase < kPhases; ++phase) {
      Region r[2];
      const int count = phase_regions(model, phase, r);
      if (count == 0) continue;
      const Matrix& m = r[0].m;
      const int ppr = pieces_per_row<F>(m.k);
      for (int g = 0; g < row_groups(r, count); ++g) {
        const GroupRow mine = group_row(r, count, g, lane % 16);  // lanes 16-31: its scales
        const uint32_t bytes = kRowBytes * uint32_t(valid_rows(r, count, g));
        for (int c0 = 0; c0 < ppr; c0 += 32, ++i) {
          const int slot = int(i % slots);
          slot_wait(s.empty[slot], ((i / slots) & 1) ^ 1);
          const uint32_t full = device::shared_address(&s.full[slot]);
          if (lane == 0) device::barrier_expect_bytes(full, bytes);
          __syncwarp();
          if (!mine.valid) continue;
          const long base = (long(layer) * m.n + mine.row) * ppr + c0;
          if (lane < 16) {
            device::bulk_copy(device::shared_address(ring + slot * kSlotBytes + lane * 512),
                              m.w + base, 512, full, policy);
          } else if (F == Format::kInt4) {
            device::bulk_copy(
                device::shared_address(scale_ring + slot * kSlotScaleBytes + (lane - 16) * 64),
                m.scales + base, 64, full, policy);
          }
        }
      }
    }
  }
}

// A GEMV phase's outputs from Shared::rows (store, residual add or SwiGLU), then rows cleared.
__device__ void store_rows(const Region (&regions)[2], int count, __nv_bfloat16* out, bool add,
                           Shared& s) {
  consumers_sync();
  const int t = threadIdx.x, rows = regions[0].rows, first = regions[0].row;
  if (t < rows) {
    float y = s.rows[t];
    if (count == 2) {
      const float up = s.rows[kMaxRows + t];
      y = y / (1.0f + __expf(-y)) * up;
    }
    if (add) y += __bfloat162float(out[first + t]);
    out[first + t] = __float2bfloat16_rn(y);
  }
  consumers_sync();  // every row is read before it is cleared for the next phase
  for (int j = t; j < 2 * kMaxRows; j += kConsumers) s.rows[j] = 0.0f;
}

// The consumers' GEMV phase in the rows layout.
template <Format F>
__device__ void gemv_rows_phase(const Model& model, int phase, int slots, uint32_t& i,
                                unsigned long long& taken, const __nv_bfloat16* x, bool norm,
                                __nv_bfloat16* out, bool add, uint8_t* ring, uint8_t* area,
                                Shared& s) {
  Region r[2];
  const int count = phase_regions(model, phase, r);
  const int k = r[0].m.k;
  prepare_x<F>(x, k, norm, area, s);
  const int t = threadIdx.x, lane = t % 32, warp = t / 32;
  const int ppr = pieces_per_row<F>(k);
  const __half* scale_ring = reinterpret_cast<const __half*>(ring + slots * kSlotBytes);
  for (int g = 0; g < row_groups(r, count); ++g) {
    const GroupRow mine = group_row(r, count, g, warp);
    if (t == 0) taken += uint64_t(32) * valid_rows(r, count, g) * (ppr / 32);
    float acc = 0.0f;
    for (int c0 = 0; c0 < ppr; c0 += 32, ++i) {
      const int slot = int(i % slots);
      slot_wait(s.full[slot], (i / slots) & 1);
      if (mine.valid) {
        const int j = slot * kSlotPieces + warp * 32 + lane;
        const uint4 w = reinterpret_cast<const uint4*>(ring)[j];
        const __half sc = F == Format::kInt4 ? scale_ring[j] : __half();
        acc += piece_dot<F>(w, sc, c0 + lane, k, area);
      }
      __syncwarp();
      if (lane == 0) device::barrier_arrive(device::shared_address(&s.empty[slot]));
    }
    const float sum = device::warp_sum(acc);
    if (lane == 0 && mine.valid) s.rows[mine.local] = sum;
  }
  store_rows(r, count, out, add, s);
}

// The consumers' GEMV phase: x prepared, then every slot of the block's regions, then the rows'
// outputs (store, residual add or SwiGLU).
template <Format F>
__device__ void gemv_phase(const Model& model, int phase, int slots, uint32_t& i,
                           unsigned long long& taken, const __nv_bfloat16* x, bool norm,
                           __nv_bfloat16* out, bool add, uint8_t* ring, uint8_t* area, Shared& s) {
  Region regions[2];
  const int count = phase_regions(model, phase, regions);
  const int k = regions[0].m.k;
  prepare_x<F>(x, k, norm, area, s);
  const int t = threadIdx.x, lane = t % 32;
  const int ppr = pieces_per_row<F>(k);
  const __half* scale_ring = reinterpret_cast<const __half*>(ring + slots * kSlotBytes);
  for (int ri = 0; ri < count; ++ri) {
    const long total = long(regions[ri].rows) * ppr;
    for (long p0 = 0; p0 < total; p0 += kSlotPieces, ++i) {
      const int slot = int(i % slots);
      slot_wait(s.full[slot], (i / slots) & 1);
      const long p = p0 + t;
      if (t == 0) taken += min(long(kSlotPieces), total - p0);
      float v = 0.0f;
      if (p < total) {
        const uint4 w = reinterpret_cast<const uint4*>(ring + slot * kSlotBytes)[t];
        const __half sc = F == Format::kInt4 ? scale_ring[slot * kSlotPieces + t] : __half();
        v = piece_dot<F>(w, sc, int(p % ppr), k, area);
      }
      __syncwarp();
      if (lane == 0) device::barrier_arrive(device::shared_address(&s.empty[slot]));
      v = device::warp_sum(v);
      if (lane == 0 && p < total) atomicAdd(&s.rows[ri * kMaxRows + p / ppr], v);
    }
  }
  store_rows(regions, count, out, add, s);
}

// The attention stand-in (see the top of the file).
__device__ void attention_phase(const Model& model, const Activations& a, long wait_ns, Shared& s) {
  const uint64_t start = device::now_ns();
  const int t = threadIdx.x;
  float v = __bfloat162float(__ldcg(a.qkv + t));  // 1 KB of the queries
  const long share = kCacheBytes / 16 / gridDim.x;
  const uint4* mine = model.cache + share * blockIdx.x;
  uint32_t bits = 0;
  for (long j = t; j < share; j += kConsumers) {
    const uint4 c = __ldcg(mine + j);
    bits ^= c.x ^ c.y ^ c.z ^ c.w;
  }
  v += float(bits & 1u);
  const float total = consumers_sum(v, s);
  if (t == 0) {
    while (device::now_ns() < start + uint64_t(wait_ns)) {
    }
  }
  consumers_sync();
  int first, count;
  my_rows(kHidden, first, count);
  if (t < count) a.attn[first + t] = __float2bfloat16_rn(total * 1e-3f);
}

// The real attention phase: block u < kKvHeads * kSplits takes kv head u / kSplits and keys
// [32 (u % kSplits), + 32) of a contiguous cache (K [kKeys][kKvHeads][kHeadDim], then V; no
// rope, every key visible), the 4 query rows of q|k|v's output that share the kv head. Thread t
// holds piece t % 16 (8 elements) of key t / 16, of K and of V, loaded before the grid barrier
// (load_kv) as the engine's kernel loads its first chunk. Scores (4 threads a score, 2 shuffles),
// a softmax a warp per row, the values a thread per output element; the partial (max, sum and
// unnormalized output) goes to global memory, and the last block of the kv head (a counter)
// merges the kSplits partials into its 512 outputs. Not inlined: inlined, it took the kernel's
// GEMV phases to 12-56 bytes of spills at the 56 registers two blocks an SM allow.
struct KvPieces {
  uint4 k, v;
};
__device__ __forceinline__ bool attention_unit(int& kvh, int& split) {
  kvh = int(blockIdx.x) / kSplits;
  split = int(blockIdx.x) % kSplits;
  return int(blockIdx.x) < kKvHeads * kSplits;
}
__device__ __forceinline__ KvPieces load_kv(const Model& model) {
  KvPieces r{make_uint4(0, 0, 0, 0), make_uint4(0, 0, 0, 0)};
  int kvh, split;
  if (!attention_unit(kvh, split)) return r;
  const int j = split * kChunkKeys + int(threadIdx.x) / 16, part = int(threadIdx.x) % 16;
  if (j < kKeys) {
    const long at = (long(j) * kKvHeads + kvh) * (kHeadDim / 8) + part;
    r.k = __ldcg(model.cache + at);
    r.v = __ldcg(model.cache + long(kKeys) * kKvHeads * (kHeadDim / 8) + at);
  }
  return r;
}

__device__ __noinline__ void attention_real(const Model& model, const Activations& a, int layer,
                                            int phase_index, bool last_layer, uint8_t* area,
                                            Shared& s) {
  const KvPieces kv = load_kv(model);
  grid_wait(a.counters, phase_index - 1);
  stamp(a, last_layer, 2 * 1);
  int kvh, split;
  if (!attention_unit(kvh, split)) return;
  const int t = threadIdx.x, lane = t % 32, warp = t / 32;
  auto* keys = reinterpret_cast<uint4*>(area);                           // [32][16] pieces
  auto* values = keys + kChunkKeys * 16;                                 // [32][16]
  auto* q = reinterpret_cast<__nv_bfloat16*>(values + kChunkKeys * 16);  // [4][128]
  keys[t] = kv.k;
  values[t] = kv.v;
  if (t < kQueryRows * kHeadDim / 8) {  // 64 threads, 16 bytes each
    reinterpret_cast<uint4*>(q)[t] =
        __ldcg(reinterpret_cast<const uint4*>(a.qkv + kvh * kQueryRows * kHeadDim) + t);
  }
  consumers_sync();
  // Scores: score t / 4 (row r, key j), dims [32 (t % 4), + 32) in this thread.
  const int score = t / 4, sub = t % 4, r = score / kChunkKeys, j = score % kChunkKeys;
  float dot = 0.0f;
  if (score < kQueryRows * kChunkKeys) {
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      float kf[8], qf[8];
      device::unpack_bf16x8(keys[j * 16 + sub * 4 + c], kf);
      device::unpack_bf16x8(reinterpret_cast<const uint4*>(q)[r * 16 + sub * 4 + c], qf);
#pragma unroll
      for (int e = 0; e < 8; ++e) dot = fmaf(kf[e], qf[e], dot);
    }
  }
  dot += __shfl_xor_sync(device::kFullMask, dot, 1);
  dot += __shfl_xor_sync(device::kFullMask, dot, 2);
  const float scale_log2 = 1.4426950408889634f / sqrtf(float(kHeadDim));
  if (score < kQueryRows * kChunkKeys && sub == 0) {
    s.rows[score] = split * kChunkKeys + j < kKeys ? dot * scale_log2 : -INFINITY;
  }
  consumers_sync();
  const long part = (long(kvh) * kSplits + split) * kQueryRows;
  if (warp < kQueryRows) {  // softmax: a warp per row, a lane per key
    const float sc = s.rows[warp * kChunkKeys + lane];
    const float m = device::warp_max(sc);
    const float e = sc == -INFINITY ? 0.0f : exp2f(sc - m);
    const float l = device::warp_sum(e);
    s.rows[warp * kChunkKeys + lane] = e;
    if (lane == 0) {
      a.partial_ml[2 * (part + warp)] = m;
      a.partial_ml[2 * (part + warp) + 1] = l;
    }
  }
  consumers_sync();
  {  // values: thread t takes row t / 128, element t % 128
    const int row = t / kHeadDim, d = t % kHeadDim;
    float acc = 0.0f;
    for (int key = 0; key < kChunkKeys; ++key) {
      const __nv_bfloat16* v = reinterpret_cast<const __nv_bfloat16*>(values + key * 16);
      acc = fmaf(s.rows[row * kChunkKeys + key], __bfloat162float(v[d]), acc);
    }
    a.partial_acc[(part + row) * kHeadDim + d] = acc;
  }
  consumers_sync();
  if (t < kQueryRows * kChunkKeys) s.rows[t] = 0.0f;  // the next GEMV phase adds into them
  if (t == 0) {
    __threadfence();  // this block's partial before its count
    s.last = atomicAdd(a.merges + layer * kKvHeads + kvh, 1u) == kSplits - 1;
  }
  consumers_sync();
  if (!s.last) return;
  __threadfence();  // the other splits' partials after their counts
  const int row = t / kHeadDim, d = t % kHeadDim;
  const long base = long(kvh) * kSplits * kQueryRows;
  float top = -INFINITY;
  for (int sp = 0; sp < kSplits; ++sp) {
    top = fmaxf(top, __ldcg(a.partial_ml + 2 * (base + sp * kQueryRows + row)));
  }
  float total = 0.0f, acc = 0.0f;
  for (int sp = 0; sp < kSplits; ++sp) {
    const long at = base + sp * kQueryRows + row;
    const float m = __ldcg(a.partial_ml + 2 * at);
    const float f = m == -INFINITY ? 0.0f : exp2f(m - top);
    total = fmaf(__ldcg(a.partial_ml + 2 * at + 1), f, total);
    acc = fmaf(__ldcg(a.partial_acc + at * kHeadDim + d), f, acc);
  }
  a.attn[(kvh * kQueryRows + row) * kHeadDim + d] =
      __float2bfloat16_rn(total > 0.0f ? acc / total : 0.0f);
}

template <Format F, bool kWarpRows>
__global__ void __launch_bounds__(kThreads, 2)
    layers_kernel(Model model, Activations a, int first_layer, int end_layer, int layers, int slots,
                  long attention_ns) {
  extern __shared__ __align__(128) uint8_t dynamic[];
  __shared__ Shared s;
  uint8_t* ring = dynamic;
  uint8_t* area = ring + slots * (kSlotBytes + (F == Format::kInt4 ? kSlotScaleBytes : 0));
  if (threadIdx.x == 0) {
    for (int j = 0; j < slots; ++j) {
      device::barrier_init(device::shared_address(&s.full[j]), 1);
      device::barrier_init(device::shared_address(&s.empty[j]), kConsumerWarps);
    }
    device::barrier_init_fence();
  }
  for (int j = threadIdx.x; j < 2 * kMaxRows; j += kThreads) s.rows[j] = 0.0f;
  __syncthreads();
  if (threadIdx.x >= kConsumers) {
    if constexpr (kWarpRows) {
      produce_rows<F>(model, first_layer, end_layer, slots, ring, s);
    } else if (threadIdx.x == kConsumers) {
      produce<F>(model, first_layer, end_layer, slots, ring, s);
    }
    return;
  }
  uint32_t i = 0;
  unsigned long long taken = 0;  // thread 0: the pieces of every slot it waited for
  for (int layer = first_layer; layer < end_layer; ++layer) {
    for (int phase = 0; phase < kPhases; ++phase) {
      const int q = layer * kPhases + phase;
      const bool last = layer == layers - 1;
      if (phase == 1 && attention_ns < 0) {  // it waits for the grid after its first loads
        attention_real(model, a, layer, q, last, area, s);
      } else {
        grid_wait(a.counters, q - 1);
        stamp(a, last, 2 * phase);
        if (phase == 1) {
          attention_phase(model, a, attention_ns, s);
        } else {  // x, whether it is normed, the output, whether the output is a residual add
          const __nv_bfloat16* x = phase == 2 ? a.attn : phase == 4 ? a.act : a.h;
          __nv_bfloat16* out = phase == 0 ? a.qkv : phase == 3 ? a.act : a.h;
          const bool norm = phase == 0 || phase == 3, add = phase == 2 || phase == 4;
          if constexpr (kWarpRows) {
            gemv_rows_phase<F>(model, phase, slots, i, taken, x, norm, out, add, ring, area, s);
          } else {
            gemv_phase<F>(model, phase, slots, i, taken, x, norm, out, add, ring, area, s);
          }
        }
      }
      stamp(a, layer == layers - 1, 2 * phase + 1);
      grid_arrive(a.counters, q);
    }
  }
  if (threadIdx.x == 0) atomicAdd(a.consumed, taken);
}

// A plain read of `bytes` (16 bytes a thread and step, 4 in flight), for the rate the layers are
// measured against.
__global__ void __launch_bounds__(512) read_all(const uint4* p, long pieces, unsigned* sink) {
  uint32_t bits = 0;
  const long stride = long(gridDim.x) * blockDim.x;
  long j = long(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; j + 3 * stride < pieces; j += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = device::load_stream16(p + j + u * stride);
#pragma unroll
    for (int u = 0; u < 4; ++u) bits ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; j < pieces; j += stride) {
    const uint4 v = device::load_stream16(p + j);
    bits ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (bits == 0x12345678u) *sink = bits;
}

DeviceBuffer allocate(size_t bytes, const std::string& what) {
  auto r = DeviceBuffer::allocate(bytes, what);
  MISTRAL_CHECK(r.ok()) << r.status().message();
  return std::move(r).value();
}

template <Format F>
size_t weight_bytes(int n, int k) {
  return size_t(n) * pieces_per_row<F>(k) * 16;
}
template <Format F>
size_t scale_bytes(int n, int k) {
  return F == Format::kInt4 ? size_t(n) * (k / kGroup) * 2 : 0;
}

// Weights for `layers` layers in one buffer (int4: scales after them), filled with a byte pattern
// (int4 scales and bf16 weights ~0.001-0.01, finite).
struct Weights {
  DeviceBuffer buffer;
  Model model{};
  size_t weight_total = 0, total = 0;
};

template <Format F>
Weights make_weights(int layers, const DeviceBuffer& cache) {
  const int shapes[4][2] = {
      {kQkv, kHidden}, {kHidden, kHidden}, {2 * kInter, kHidden}, {kHidden, kInter}};
  Weights out;
  for (auto& s : shapes) out.weight_total += layers * weight_bytes<F>(s[0], s[1]);
  size_t scales = 0;
  for (auto& s : shapes) scales += layers * scale_bytes<F>(s[0], s[1]);
  out.total = out.weight_total + scales;
  out.buffer = allocate(out.total, "persistent_layer_bench weights");
  auto* base = out.buffer.as<uint8_t>();
  MISTRAL_CUDA_CHECK(cudaMemset(base, F == Format::kInt4 ? 0x5a : 0x3c, out.weight_total));
  if (scales > 0) MISTRAL_CUDA_CHECK(cudaMemset(base + out.weight_total, 0x14, scales));
  size_t w_off = 0, s_off = out.weight_total;
  Matrix* matrices[4] = {&out.model.qkv, &out.model.o, &out.model.gate_up, &out.model.down};
  for (int j = 0; j < 4; ++j) {
    const int n = shapes[j][0], k = shapes[j][1];
    matrices[j]->w = reinterpret_cast<const uint4*>(base + w_off);
    matrices[j]->scales = scales > 0 ? reinterpret_cast<const __half*>(base + s_off) : nullptr;
    matrices[j]->n = n;
    matrices[j]->k = k;
    w_off += layers * weight_bytes<F>(n, k);
    s_off += layers * scale_bytes<F>(n, k);
  }
  out.model.cache = cache.as<const uint4>();
  return out;
}

// The last layer of the last launch, in us from block 0's entry into its first phase: each
// phase's [entry, done] for block 0 and for the last block.
void print_timeline(const Activations& a) {
  unsigned long long t[4 * kPhases];
  MISTRAL_CUDA_CHECK(cudaMemcpy(t, a.stamps, sizeof(t), cudaMemcpyDeviceToHost));
  const char* names[kPhases] = {"q|k|v", "attention", "o", "gate|up", "down"};
  for (int b = 0; b < 2; ++b) {
    std::printf("    last layer, block %s:", b == 0 ? "0" : "G-1");
    for (int p = 0; p < kPhases; ++p) {
      const unsigned long long* e = t + b * 2 * kPhases + 2 * p;
      std::printf("  %s %.2f-%.2f", names[p], (double(e[0]) - double(t[0])) * 1e-3,
                  (double(e[1]) - double(t[0])) * 1e-3);
    }
    std::printf("\n");
  }
}

template <Format F>
void run_format(const char* name, int layers, const cudaDeviceProp& prop, const DeviceBuffer& cache,
                const Activations& a, size_t counter_bytes, cudaStream_t stream, cudaEvent_t start,
                cudaEvent_t stop) {
  Weights weights = make_weights<F>(layers, cache);
  const int blocks = 2 * prop.multiProcessorCount;
  MISTRAL_CHECK(kInter / blocks + 1 <= kMaxRows && kQkv / blocks + 1 <= kMaxRows)
      << blocks << " blocks leave more than " << kMaxRows << " rows to a block";
  MISTRAL_CHECK(blocks >= kKvHeads * kSplits)
      << "the real attention phase needs " << kKvHeads * kSplits << " blocks, " << blocks << " run";
  auto time_ms = [&](auto&& launch) {
    float best = 1e30f;
    for (int rep = 0; rep < 4; ++rep) {
      MISTRAL_CUDA_CHECK(cudaMemsetAsync(a.consumed, 0, counter_bytes, stream));
      MISTRAL_CUDA_CHECK(cudaEventRecord(start, stream));
      launch();
      MISTRAL_CUDA_CHECK(cudaEventRecord(stop, stream));
      MISTRAL_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms;
      MISTRAL_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (rep > 0) best = std::min(best, ms);
    }
    return best;
  };
  const long pieces = long(weights.total / 16);
  const float read_ms = time_ms([&] {
    read_all<<<blocks, 512, 0, stream>>>(weights.buffer.as<const uint4>(), pieces, a.counters);
  });
  const double per_layer_bytes = double(weights.total) / layers;
  const double read_gbs = double(weights.total) / (read_ms * 1e-3) * 1e-9;
  std::printf("%s: %.1f MB of weights a layer; plain read %.0f GB/s, %.2f us a layer\n", name,
              per_layer_bytes * 1e-6, read_gbs, read_ms * 1e3 / layers);
  const size_t slot_bytes = kSlotBytes + (F == Format::kInt4 ? kSlotScaleBytes : 0);
  const size_t area = F == Format::kInt4 ? kInter + (kInter / kGroup) * 8 : kInter * 2;
  cudaLaunchAttribute cooperative[1];
  cooperative[0].id = cudaLaunchAttributeCooperative;
  cooperative[0].val.cooperative = 1;
  // One configuration: all layers in one launch, or (per_layer) a cooperative launch per layer,
  // each after the one before in the stream (the ring starts empty at every layer then).
  auto measure = [&](bool warp_rows, int slots, long attention_ns, bool per_layer) {
    auto* kernel = warp_rows ? layers_kernel<F, true> : layers_kernel<F, false>;
    MISTRAL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            int(kMaxSlots * slot_bytes + area)));
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(blocks);
    config.blockDim = dim3(kThreads);
    config.dynamicSmemBytes = slots * slot_bytes + area;
    config.stream = stream;
    config.attrs = cooperative;
    config.numAttrs = 1;
    int resident = 0;
    MISTRAL_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kernel, kThreads,
                                                                     config.dynamicSmemBytes));
    MISTRAL_CHECK(resident >= 2) << "persistent_layer_bench: " << resident
                                 << " blocks fit an SM with " << config.dynamicSmemBytes
                                 << " bytes of shared memory; 2 needed";
    const float ms = time_ms([&] {
      for (int first = 0; first < layers; first += per_layer ? 1 : layers) {
        const int end = per_layer ? first + 1 : layers;
        MISTRAL_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, weights.model, a, first, end, layers,
                                              slots, attention_ns));
      }
    });
    unsigned long long taken = 0;  // the last rep's: every weight piece, once
    MISTRAL_CUDA_CHECK(cudaMemcpy(&taken, a.consumed, sizeof(taken), cudaMemcpyDeviceToHost));
    MISTRAL_CHECK(taken == weights.weight_total / 16)
        << "persistent_layer_bench: the consumers took " << taken << " pieces of "
        << weights.weight_total / 16;
    const double us = ms * 1e3 / layers;
    const double gbs = per_layer_bytes / (us * 1e-6) * 1e-9;
    char attention[32];
    if (attention_ns < 0) {
      std::snprintf(attention, sizeof(attention), "real");
    } else {
      std::snprintf(attention, sizeof(attention), "%.1f us", attention_ns * 1e-3);
    }
    std::printf(
        "%s %-6s ring %d x %2zu KB  attention %-7s%s  %8.2f us a layer  %6.0f GB/s  %.3f of the "
        "plain read\n",
        name, warp_rows ? "rows" : "chunks", slots, slot_bytes >> 10, attention,
        per_layer ? "  a launch a layer" : "", us, gbs, gbs / read_gbs);
    if (slots == kMaxSlots) print_timeline(a);
  };
  for (bool warp_rows : {false, true}) {
    for (int slots : {2, 5, kMaxSlots}) {
      for (long attention_ns : {0L, 4000L, 8000L, -1L})
        measure(warp_rows, slots, attention_ns, false);
    }
  }
  measure(true, kMaxSlots, -1, true);
}

}  // namespace

int main(int argc, char** argv) {
  int layers = 32;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--layers") == 0 && i + 1 < argc) {
      layers = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: persistent_layer_bench [--layers N]\n");
      return 2;
    }
  }
  cudaDeviceProp prop;
  MISTRAL_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, %d SMs, %d blocks x %d threads, %d layers\n", prop.name,
              prop.multiProcessorCount, 2 * prop.multiProcessorCount, kThreads, layers);
  const DeviceBuffer cache = allocate(kCacheBytes, "persistent_layer_bench cache");
  MISTRAL_CUDA_CHECK(cudaMemset(cache.data(), 0x11, kCacheBytes));
  const int sizes[4] = {kHidden, kQkv, kHidden, kInter};
  DeviceBuffer acts[4];
  for (int j = 0; j < 4; ++j) {
    acts[j] = allocate(sizes[j] * sizeof(__nv_bfloat16), "persistent_layer_bench activations");
    MISTRAL_CUDA_CHECK(cudaMemset(acts[j].data(), 0x3c, acts[j].bytes()));  // ~0.0115
  }
  // The consumed count, then the phases' counters: cleared together before every launch.
  const size_t counter_bytes =
      sizeof(unsigned long long) + size_t(layers) * (kPhases + kKvHeads) * sizeof(unsigned);
  const DeviceBuffer counters = allocate(counter_bytes, "persistent_layer_bench counters");
  auto* consumed = counters.as<unsigned long long>();
  const DeviceBuffer stamps = allocate(4 * kPhases * 8, "persistent_layer_bench timeline");
  const size_t parts = size_t(kKvHeads) * kSplits * kQueryRows;
  const DeviceBuffer partials =
      allocate(parts * (kHeadDim + 2) * sizeof(float), "persistent_layer_bench partials");
  Activations a{acts[0].as<__nv_bfloat16>(),
                acts[1].as<__nv_bfloat16>(),
                acts[2].as<__nv_bfloat16>(),
                acts[3].as<__nv_bfloat16>(),
                reinterpret_cast<unsigned*>(consumed + 1),
                consumed,
                stamps.as<unsigned long long>(),
                reinterpret_cast<unsigned*>(consumed + 1) + size_t(layers) * kPhases,
                partials.as<float>(),
                partials.as<float>() + parts * kHeadDim};
  cudaStream_t stream;
  MISTRAL_CUDA_CHECK(cudaStreamCreate(&stream));
  cudaEvent_t start, stop;
  MISTRAL_CUDA_CHECK(cudaEventCreate(&start));
  MISTRAL_CUDA_CHECK(cudaEventCreate(&stop));
  run_format<Format::kInt4>("int4", layers, prop, cache, a, counter_bytes, stream, start, stop);
  run_format<Format::kBF16>("bf16", layers, prop, cache, a, counter_bytes, stream, start, stop);
  MISTRAL_CUDA_CHECK(cudaEventDestroy(start));
  MISTRAL_CUDA_CHECK(cudaEventDestroy(stop));
  MISTRAL_CUDA_CHECK(cudaStreamDestroy(stream));
  return 0;
}
