// Decode GEMV y[m, n] = x[m, k] * W^T (m <= 8) for bf16, int8 and int4 weights.
//
// Work split. W is cut into tiles of 16 rows and each tile's rows into runs of 256 bytes; the
// (tile, run) pairs, tile-major, are divided evenly among a grid of one-warp blocks, each taking
// a contiguous range (stream-K): 16 warps per SM, or one warp per tile when that gives 14 to 18
// per SM. A warp streams its range through a 3-stage cp.async pipeline in shared memory that does
// not drain between tiles, and the scheduler balances single warps, so no SM idles on a last
// partial wave. A tile whose runs are split between warps is finished by the last of them to
// arrive, which adds their partial sums in warp order: deterministic, and independent of m, so a
// row of x gives the same bits alone or in a batch. Each cp.async instruction reads 256
// contiguous bytes of two rows (whole 128-byte lines) and scatters them into fragment order, so
// every lane reads its pieces with conflict-free 16-byte shared loads. Every run but a row's last
// is full and computed without bounds checks. (Tried and measured slower on H100: each lane
// loading its own 16-byte pieces into registers, which reads half lines; blocks of 4 warps
// sharing a tile; 4 stages with 8 warps per SM. Numbers in bench/cuda/RESULTS.md.)
//
// Arithmetic: mma.m16n8k16 on tensor cores, A = 16 rows of W by 16 k, B = 16 k by 8 columns,
// float32 accumulation. Per 64-byte step, lane (g = lane / 4, t = lane % 4) holds 16 bytes of rows
// g and g + 8; the sum over k is order-free inside an mma, so each lane maps the elements it holds
// to its own k-slots (2t, 2t+1, 2t+8, 2t+9) and B carries x for the same elements.
//  - bf16: column c of B is row c of x (columns >= m are zero).
//  - int8 / int4: a lane's 16 bytes are one scale group (int4) or half of one (int8), and the
//    quad's four lanes hold different groups. Column c of B is nonzero only in the k-slots of
//    lane c % 4, so column c of the product is the partial sum of that lane's group alone and
//    can take that group's scale; with 8 columns, one mma serves two rows of x (columns 4b .. 4b+3
//    for row b) and m <= 8 takes ceil(m / 2) mmas per step. The four group slots of a row are
//    added by one shuffle when a tile is done. q (int8) and nibble - 8 (int4) are small integers,
//    expanded exactly to bf16 (a byte permute that puts the exponent of 128 above each value,
//    then a subtraction), so the mma sums exact products and the f16 scale multiplies each
//    partial sum in float32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_util.cuh"
#include "backend/cuda/gemv_rows.h"
#include "backend/cuda/kernel_launch.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/linear_operands.h"
#include "backend/cuda/weight_expand.cuh"

namespace mistral::cuda {

namespace {

using namespace device;

constexpr int kThreads = 32;  // one warp per block: the scheduler balances single warps
constexpr int kTileRows = 16;
constexpr int kStepBytes = 64;  // of one row, per quad and step
constexpr int kRunSteps = 4;    // steps per run (one pipeline stage)
constexpr int kRunBytes = kStepBytes * kRunSteps;
constexpr int kStageBytes = kRunSteps * 2 * 32 * 16;
constexpr int kDefaultStages = 3;  // pipeline stages: stages - 1 runs in flight per warp
constexpr int kWarpsPerSm = 16;
constexpr int kMaxOut = 8;  // floats per lane a tile's result takes (bf16 4, quantized 2 * NB)

struct GemvArgs {
  const bf16* x;
  int m;
  int64_t n;
  int k;
  const uint8_t* w;
  int row_bytes;
  const __half* scales;
  int groups;             // scale groups per row
  int64_t tiles;          // ceil(n / 16)
  int runs;               // per tile: ceil(row_bytes / kRunBytes)
  int64_t runs_per_warp;  // of the tiles * runs (tile, run) pairs
  int max_slots;          // most warps sharing one tile
  float* partial;         // [tiles][max_slots][kMaxOut][32] for tiles shared by warps
  unsigned* counters;     // [tiles], zero between launches
};

__device__ __forceinline__ uint4 load_x16(const bf16* p, bool ok) {
  return ok ? __ldg(reinterpret_cast<const uint4*>(p)) : make_uint4(0, 0, 0, 0);
}
__device__ __forceinline__ float load_scale(const __half* p, bool ok) {
  return ok ? __half2float(__ldg(p)) : 0.0f;
}

// Per-format work on one 64-byte step of a tile, and the tile's result: kOut floats per lane.
// set_tile points the state at a tile's rows; reset clears the sums for the next tile.
template <WeightFormat F, int NB>
struct Step;

// bf16: acc = the C fragment (rows g, g + 8; columns 2t, 2t + 1 = rows of x).
template <int NB>
struct Step<WeightFormat::kBF16, NB> {
  static constexpr int kOut = 4;
  float acc[4];
  const bf16* x_row;  // row g of x, or null when g >= m
  int t;

  __device__ Step(const GemvArgs& a, int g, int t_) : t(t_) {
    x_row = g < a.m ? a.x + int64_t(g) * a.k : nullptr;
    reset();
  }
  __device__ void set_tile(const GemvArgs&, int64_t, int64_t) {}
  __device__ void reset() { acc[0] = acc[1] = acc[2] = acc[3] = 0.0f; }
  template <bool kFull>
  __device__ __forceinline__ void run(const GemvArgs& a, int step, uint4 wa, uint4 wb) {
    const int chunk = step * 4 + t;  // 8-element chunk of the row
    const uint4 xv = load_x16(x_row + chunk * 8, x_row != nullptr && (kFull || chunk * 8 < a.k));
    mma_bf16_16816(acc, {wa.x, wb.x, wa.y, wb.y}, {xv.x, xv.y});
    mma_bf16_16816(acc, {wa.z, wb.z, wa.w, wb.w}, {xv.z, xv.w});
  }
  __device__ void finish(float (&out)[kOut]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) out[i] = acc[i];
  }
  template <typename OutT>
  __device__ void store(const GemvArgs& a, OutT* y, int64_t row0, int g, const float (&v)[kOut]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int col = 2 * t + (i & 1);
      const int64_t row = row0 + g + (i < 2 ? 0 : 8);
      if (row < a.n && col < a.m) y[col * a.n + row] = from_float<OutT>(v[i]);
    }
  }
};

// Shared by int8 and int4: NB column blocks; block nb serves rows 2 nb and 2 nb + 1 of x. Lane
// (g, t) supplies B column g, nonzero iff g % 4 == t, from row 2 nb + g / 4 of x at the elements
// of its own chunk. acc[nb]: C fragment, columns 2t, 2t + 1 = group slots of row 2 nb + t / 2.
template <int NB>
struct QuantBase {
  static constexpr int kOut = 2 * NB;
  float acc[NB][4];
  const bf16* x_row[NB];  // or null: this lane supplies zeros
  int t;

  __device__ QuantBase(const GemvArgs& a, int g, int t_) : t(t_) {
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      const int row = 2 * nb + g / 4;
      x_row[nb] = (g % 4 == t && row < a.m) ? a.x + int64_t(row) * a.k : nullptr;
    }
    reset();
  }
  __device__ void reset() {
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) acc[nb][0] = acc[nb][1] = acc[nb][2] = acc[nb][3] = 0.0f;
  }
  // Row sums of x row 2 nb + t / 2 for tile rows g and g + 8 (the four group slots added).
  __device__ void finish(float (&out)[kOut]) {
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      float ra = acc[nb][0] + acc[nb][1], rb = acc[nb][2] + acc[nb][3];
      ra += __shfl_xor_sync(kFullMask, ra, 1);
      rb += __shfl_xor_sync(kFullMask, rb, 1);
      out[2 * nb] = ra;
      out[2 * nb + 1] = rb;
    }
  }
  template <typename OutT>
  __device__ void store(const GemvArgs& a, OutT* y, int64_t row0, int g, const float (&v)[kOut]) {
    if (t % 2 != 0) return;
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      const int col = 2 * nb + t / 2;
      if (col >= a.m) continue;
      if (row0 + g < a.n) y[col * a.n + row0 + g] = from_float<OutT>(v[2 * nb]);
      if (row0 + g + 8 < a.n) y[col * a.n + row0 + g + 8] = from_float<OutT>(v[2 * nb + 1]);
    }
  }
};

// int8: a lane's 16 bytes are elements 16 (t % 2) .. +15 of group 2 step + t / 2: 4 mma steps of 4
// elements (one word each). Columns 2t, 2t + 1 are slots of lanes 2 (t % 2) and +1, both in group
// 2 step + t % 2: one scale per row.
template <int NB>
struct Step<WeightFormat::kInt8, NB> : QuantBase<NB> {
  const __half* sa;  // scales of rows g and g + 8, at this lane's group slot
  const __half* sb;

  __device__ Step(const GemvArgs& a, int g, int t) : QuantBase<NB>(a, g, t) {}
  __device__ void set_tile(const GemvArgs& a, int64_t row_a, int64_t row_b) {
    sa = a.scales + row_a * a.groups + this->t % 2;
    sb = a.scales + row_b * a.groups + this->t % 2;
  }
  template <bool kFull>
  __device__ __forceinline__ void run(const GemvArgs& a, int step, uint4 wa, uint4 wb) {
    const int t = this->t;
    const uint32_t ra[4] = {wa.x, wa.y, wa.z, wa.w}, rb[4] = {wb.x, wb.y, wb.z, wb.w};
    uint32_t frag[4][4];
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      // u = q ^ 0x80 = q + 128; ul, uh its nibbles (uh of u is uh of q with bit 3 flipped).
      const uint32_t la = ra[w] & 0x0F0F0F0Fu, ha = ((ra[w] >> 4) & 0x0F0F0F0Fu) ^ 0x08080808u;
      const uint32_t lb = rb[w] & 0x0F0F0F0Fu, hb = ((rb[w] >> 4) & 0x0F0F0F0Fu) ^ 0x08080808u;
      frag[w][0] = int8_pair(magic01(ha), magic01(la));
      frag[w][1] = int8_pair(magic01(hb), magic01(lb));
      frag[w][2] = int8_pair(magic23(ha), magic23(la));
      frag[w][3] = int8_pair(magic23(hb), magic23(lb));
    }
    const int group = step * 2 + t % 2;
    const bool group_ok = kFull || group < a.groups;
    const float s_a = load_scale(sa + step * 2, group_ok);
    const float s_b = load_scale(sb + step * 2, group_ok);
    const int chunk = step * 4 + t;  // this lane's 16-element chunk
    const bool chunk_ok = kFull || chunk * 16 < a.k;
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      const bf16* xr = this->x_row[nb];
      const uint4 x0 = load_x16(xr + chunk * 16, xr != nullptr && chunk_ok);
      const uint4 x1 = load_x16(xr + chunk * 16 + 8, xr != nullptr && chunk_ok);
      // Two independent chains, so the tensor core's latency is paid half as often.
      float p0[4] = {0.0f, 0.0f, 0.0f, 0.0f}, p1[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      mma_bf16_16816(p0, frag[0], {x0.x, x0.y});
      mma_bf16_16816(p1, frag[1], {x0.z, x0.w});
      mma_bf16_16816(p0, frag[2], {x1.x, x1.y});
      mma_bf16_16816(p1, frag[3], {x1.z, x1.w});
      float(&acc)[4] = this->acc[nb];
      acc[0] = fmaf(s_a, p0[0] + p1[0], acc[0]);
      acc[1] = fmaf(s_a, p0[1] + p1[1], acc[1]);
      acc[2] = fmaf(s_b, p0[2] + p1[2], acc[2]);
      acc[3] = fmaf(s_b, p0[3] + p1[3], acc[3]);
    }
  }
};

// int4: a lane's 16 bytes are group 4 step + t: byte j holds element j (low nibble) and j + 16
// (high). 8 mma steps: word w's low nibbles are elements 4w .. 4w+3, its high ones 16 + 4w ...
// Columns 2t, 2t + 1 are slots of lanes 2 (t % 2) and +1: groups 4 step + 2 (t % 2) and +1.
template <int NB>
struct Step<WeightFormat::kInt4, NB> : QuantBase<NB> {
  const __half* sa;
  const __half* sb;

  __device__ Step(const GemvArgs& a, int g, int t) : QuantBase<NB>(a, g, t) {}
  __device__ void set_tile(const GemvArgs& a, int64_t row_a, int64_t row_b) {
    sa = a.scales + row_a * a.groups + 2 * (this->t % 2);
    sb = a.scales + row_b * a.groups + 2 * (this->t % 2);
  }
  template <bool kFull>
  __device__ __forceinline__ void run(const GemvArgs& a, int step, uint4 wa, uint4 wb) {
    const int t = this->t;
    const uint32_t ra[4] = {wa.x, wa.y, wa.z, wa.w}, rb[4] = {wb.x, wb.y, wb.z, wb.w};
    uint32_t lo[4][4], hi[4][4];
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint32_t la = ra[w] & 0x0F0F0F0Fu, ha = (ra[w] >> 4) & 0x0F0F0F0Fu;
      const uint32_t lb = rb[w] & 0x0F0F0F0Fu, hb = (rb[w] >> 4) & 0x0F0F0F0Fu;
      lo[w][0] = bf16x2_sub(magic01(la), kBf16x2_136);
      lo[w][1] = bf16x2_sub(magic01(lb), kBf16x2_136);
      lo[w][2] = bf16x2_sub(magic23(la), kBf16x2_136);
      lo[w][3] = bf16x2_sub(magic23(lb), kBf16x2_136);
      hi[w][0] = bf16x2_sub(magic01(ha), kBf16x2_136);
      hi[w][1] = bf16x2_sub(magic01(hb), kBf16x2_136);
      hi[w][2] = bf16x2_sub(magic23(ha), kBf16x2_136);
      hi[w][3] = bf16x2_sub(magic23(hb), kBf16x2_136);
    }
    const int group = step * 4 + 2 * (t % 2);
    const float s_a0 = load_scale(sa + step * 4, kFull || group < a.groups);
    const float s_a1 = load_scale(sa + step * 4 + 1, kFull || group + 1 < a.groups);
    const float s_b0 = load_scale(sb + step * 4, kFull || group < a.groups);
    const float s_b1 = load_scale(sb + step * 4 + 1, kFull || group + 1 < a.groups);
    const int chunk = step * 4 + t;  // this lane's group
    const bool chunk_ok = kFull || chunk < a.groups;
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      const bf16* xr = this->x_row[nb] + chunk * 32;
      const bool ok = this->x_row[nb] != nullptr && chunk_ok;
      const uint4 x0 = load_x16(xr, ok), x1 = load_x16(xr + 8, ok);
      const uint4 x2 = load_x16(xr + 16, ok), x3 = load_x16(xr + 24, ok);
      // Low and high nibbles in two independent chains.
      float p0[4] = {0.0f, 0.0f, 0.0f, 0.0f}, p1[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      mma_bf16_16816(p0, lo[0], {x0.x, x0.y});
      mma_bf16_16816(p1, hi[0], {x2.x, x2.y});
      mma_bf16_16816(p0, lo[1], {x0.z, x0.w});
      mma_bf16_16816(p1, hi[1], {x2.z, x2.w});
      mma_bf16_16816(p0, lo[2], {x1.x, x1.y});
      mma_bf16_16816(p1, hi[2], {x3.x, x3.y});
      mma_bf16_16816(p0, lo[3], {x1.z, x1.w});
      mma_bf16_16816(p1, hi[3], {x3.z, x3.w});
      float(&acc)[4] = this->acc[nb];
      acc[0] = fmaf(s_a0, p0[0] + p1[0], acc[0]);
      acc[1] = fmaf(s_a1, p0[1] + p1[1], acc[1]);
      acc[2] = fmaf(s_b0, p0[2] + p1[2], acc[2]);
      acc[3] = fmaf(s_b1, p0[3] + p1[3], acc[3]);
    }
  }
};

// Copies run `run` of tile `tile` (16 rows) into `stage`, in fragment order
// ([step][row g or g + 8][lane][16 bytes]). Each instruction reads 256 contiguous bytes of two
// rows; lane L takes row 2j + L / 16, chunk L % 16, and writes it where the lane that computes on
// it reads it. Rows past n read row n - 1 (their results are dropped); bytes past the row end are
// zero-filled.
__device__ __forceinline__ void issue_run(const GemvArgs& a, int64_t tile, int run, int lane,
                                          uint8_t* stage) {
  const int c = lane % 16, u = c / 4, t = c % 4;
  const int offset = run * kRunBytes + c * 16;
  const bool ok = offset < a.row_bytes;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int r = 2 * j + lane / 16;  // row within the tile
    const int64_t row = min(tile * kTileRows + r, a.n - 1);
    const uint8_t* src = a.w + row * a.row_bytes + (ok ? offset : 0);
    cp_async16(stage + ((u * 2 + r / 8) * 32 + (r % 8) * 4 + t) * 16, src, ok);
  }
}

template <WeightFormat F, int NB, typename OutT, int kStages>
__global__ void __launch_bounds__(kThreads) gemv_kernel(GemvArgs a, OutT* __restrict__ y) {
  device::begin_after_prior_kernels();
  using S = Step<F, NB>;
  constexpr int kOut = S::kOut;
  const int lane = threadIdx.x;
  const int g = lane / 4, t = lane % 4;
  const int64_t warp = blockIdx.x;
  const int64_t begin = warp * a.runs_per_warp;
  const int64_t end = min(begin + a.runs_per_warp, a.tiles * a.runs);
  if (begin >= end) return;
  const int count = static_cast<int>(end - begin);
  const int full_runs = a.row_bytes / kRunBytes;  // runs before this lie entirely inside the row

  extern __shared__ uint4 gemv_smem[];
  uint8_t* stages = reinterpret_cast<uint8_t*>(gemv_smem);
  // (tile, run) of the next run to issue, advanced one run at a time.
  int64_t issue_tile = begin / a.runs;
  int issue_r = static_cast<int>(begin % a.runs);
  auto issue_next = [&](int i) {
    issue_run(a, issue_tile, issue_r, lane, stages + (i % kStages) * kStageBytes);
    if (++issue_r == a.runs) {
      issue_r = 0;
      ++issue_tile;
    }
  };
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < count) issue_next(i);
    cp_async_commit();  // empty groups too: the wait below counts groups
  }

  int64_t tile = begin / a.runs;
  int run = static_cast<int>(begin % a.runs);
  S step(a, g, t);
  step.set_tile(a, min(tile * kTileRows + g, a.n - 1), min(tile * kTileRows + g + 8, a.n - 1));
  for (int i = 0; i < count; ++i) {
    cp_async_wait<kStages - 2>();
    __syncwarp();
    const uint4* stage = reinterpret_cast<const uint4*>(stages + (i % kStages) * kStageBytes);
    uint4 wa[kRunSteps], wb[kRunSteps];
#pragma unroll
    for (int u = 0; u < kRunSteps; ++u) {
      wa[u] = stage[(u * 2) * 32 + lane];
      wb[u] = stage[(u * 2 + 1) * 32 + lane];
    }
    __syncwarp();  // the stage refilled next was read by every lane
    if (i + kStages - 1 < count) issue_next(i + kStages - 1);
    cp_async_commit();
    if (run < full_runs) {  // uniform across the warp
#pragma unroll
      for (int u = 0; u < kRunSteps; ++u) {
        step.template run<true>(a, run * kRunSteps + u, wa[u], wb[u]);
      }
    } else {
#pragma unroll
      for (int u = 0; u < kRunSteps; ++u) {
        step.template run<false>(a, run * kRunSteps + u, wa[u], wb[u]);
      }
    }
    if (run + 1 < a.runs && i + 1 < count) {
      ++run;
      continue;
    }

    // This warp's share of `tile` is done.
    float out[kOut];
    step.finish(out);
    const int64_t first = tile * a.runs / a.runs_per_warp;
    const int64_t last = ((tile + 1) * a.runs - 1) / a.runs_per_warp;
    bool store = true;
    if (last > first) {  // shared with other warps: the last to arrive adds the shares in order
      float* part = a.partial + tile * a.max_slots * (kMaxOut * 32);
#pragma unroll
      for (int v = 0; v < kOut; ++v) part[((warp - first) * kMaxOut + v) * 32 + lane] = out[v];
      __threadfence();  // publish the share before counting it
      __syncwarp();
      unsigned done = 0;
      if (lane == 0) done = atomicAdd(&a.counters[tile], 1u);
      done = __shfl_sync(kFullMask, done, 0);
      store = done == static_cast<unsigned>(last - first);
      if (store) {
        __threadfence();  // the other shares are visible from here on
#pragma unroll
        for (int v = 0; v < kOut; ++v) {
          float sum = 0.0f;
          for (int64_t sh = 0; sh <= last - first; ++sh) {
            sum += __ldcg(&part[(sh * kMaxOut + v) * 32 + lane]);
          }
          out[v] = sum;
        }
        if (lane == 0) a.counters[tile] = 0;  // ready for the next launch
      }
    }
    if (store) step.store(a, y, tile * kTileRows, g, out);
    step.reset();
    ++tile;
    run = 0;
    step.set_tile(a, min(tile * kTileRows + g, a.n - 1), min(tile * kTileRows + g + 8, a.n - 1));
  }
}

struct Plan {
  int stages;
  int64_t tiles;
  int runs;
  int64_t warps;
  int64_t runs_per_warp;
  int max_slots;
  size_t scratch_bytes;
};

// From the shape and the GPU alone, so the split of the sums (and so the result bits) does not
// depend on m. Measured on H100 (bench/cuda/RESULTS.md): warps per SM matter more than pipeline
// depth, and a warp that owns whole tiles beats shared tiles when there are enough tiles. So: one
// warp per tile when that gives 14 to 18 warps per SM (18 is what stays resident with 3 stages),
// else kWarpsPerSm warps per SM streaming equal shares.
Plan make_plan(const KernelContext& ctx, const DeviceWeight& w, const GemvOptions& options) {
  MISTRAL_CHECK(options.stages == 0 || options.stages == 3 || options.stages == 4)
      << "gemv stages " << options.stages << " (3 or 4)";
  Plan p;
  p.stages = options.stages == 0 ? kDefaultStages : options.stages;
  p.tiles = (w.n + kTileRows - 1) / kTileRows;
  const int64_t row_bytes = static_cast<int64_t>(w.data_bytes() / w.n);
  p.runs = static_cast<int>((row_bytes + kRunBytes - 1) / kRunBytes);
  const int64_t total = p.tiles * p.runs;
  const int64_t sms = ctx.num_sms();
  int64_t warps = int64_t{kWarpsPerSm} * sms;
  if (p.tiles >= 14 * sms && p.tiles <= 18 * sms) warps = p.tiles;
  if (options.warps > 0) warps = options.warps;
  p.runs_per_warp = (total + std::min(warps, total) - 1) / std::min(warps, total);
  p.warps = (total + p.runs_per_warp - 1) / p.runs_per_warp;
  p.max_slots = static_cast<int>((p.runs + p.runs_per_warp - 1) / p.runs_per_warp + 1);
  // Unless every warp's share is a whole number of tiles, some tiles are shared.
  const bool shared = p.runs_per_warp % p.runs != 0;
  p.scratch_bytes =
      shared ? static_cast<size_t>(p.tiles) * p.max_slots * kMaxOut * 32 * sizeof(float) : 0;
  return p;
}

template <WeightFormat F, int NB, typename OutT>
void launch(KernelContext& ctx, const Plan& plan, const GemvArgs& a, OutT* y) {
  auto* kernel = plan.stages == 4 ? gemv_kernel<F, NB, OutT, 4> : gemv_kernel<F, NB, OutT, 3>;
  const int smem = plan.stages * kStageBytes;
  MISTRAL_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  launch_kernel(ctx, kernel, static_cast<unsigned>(plan.warps), kThreads, smem, a, y);
}

template <WeightFormat F, typename OutT>
void launch_quant(KernelContext& ctx, const Plan& plan, const GemvArgs& a, OutT* y) {
  switch ((a.m + 1) / 2) {
    case 1:
      launch<F, 1>(ctx, plan, a, y);
      break;
    case 2:
      launch<F, 2>(ctx, plan, a, y);
      break;
    case 3:
      launch<F, 3>(ctx, plan, a, y);
      break;
    default:
      launch<F, 4>(ctx, plan, a, y);
      break;
  }
}

template <typename OutT>
void gemv_impl(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, OutT* y,
               const GemvOptions& options) {
  check_linear_weight(w);
  if (use_gemv_rows(w, options)) return gemv_rows(ctx, x, m, w, y);
  MISTRAL_CHECK(m >= 1 && m <= kMaxGemvRows)
      << "gemv takes 1.." << kMaxGemvRows << " rows, got " << m;
  const Plan plan = make_plan(ctx, w, options);
  MISTRAL_CHECK(plan.tiles <= static_cast<int64_t>(KernelContext::kMaxCounters))
      << "gemv n = " << w.n << " has more row tiles than the context's counters";
  MISTRAL_CHECK(ctx.scratch_bytes() >= plan.scratch_bytes)
      << "gemv [" << w.n << ", " << w.k << "] needs " << plan.scratch_bytes
      << " bytes of scratch; call reserve_scratch first";
  GemvArgs a;
  set_linear_operands(a, x, m, w);
  a.tiles = plan.tiles;
  a.runs = plan.runs;
  a.runs_per_warp = plan.runs_per_warp;
  a.max_slots = plan.max_slots;
  a.partial = static_cast<float*>(ctx.scratch());
  a.counters = ctx.counters();
  switch (w.format) {
    case WeightFormat::kBF16:
      launch<WeightFormat::kBF16, 0>(ctx, plan, a, y);
      break;
    case WeightFormat::kInt8:
      launch_quant<WeightFormat::kInt8>(ctx, plan, a, y);
      break;
    case WeightFormat::kInt4:
      launch_quant<WeightFormat::kInt4>(ctx, plan, a, y);
      break;
  }
  MISTRAL_CUDA_CHECK_LAUNCH();
}

}  // namespace

const char* weight_format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::kBF16:
      return "bf16";
    case WeightFormat::kInt8:
      return "int8";
    case WeightFormat::kInt4:
      return "int4";
  }
  return "?";
}

size_t DeviceWeight::data_bytes() const {
  const size_t elements = static_cast<size_t>(n) * static_cast<size_t>(k);
  switch (format) {
    case WeightFormat::kBF16:
      return elements * 2;
    case WeightFormat::kInt8:
      return elements;
    case WeightFormat::kInt4:
      return elements / 2;
  }
  return 0;
}

size_t DeviceWeight::scale_bytes() const {
  if (format == WeightFormat::kBF16) return 0;
  return static_cast<size_t>(n) * static_cast<size_t>(k / kQuantGroup) * sizeof(__half);
}

size_t gemv_scratch_bytes(const KernelContext& ctx, const DeviceWeight& w,
                          const GemvOptions& options) {
  if (use_gemv_rows(w, options)) return gemv_rows_scratch_bytes(w);
  return make_plan(ctx, w, options).scratch_bytes;
}

void gemv(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, float* y,
          const GemvOptions& options) {
  gemv_impl(ctx, x, m, w, y, options);
}

void gemv(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, bf16* y,
          const GemvOptions& options) {
  gemv_impl(ctx, x, m, w, y, options);
}

}  // namespace mistral::cuda
