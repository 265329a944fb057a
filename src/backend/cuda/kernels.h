// The CUDA kernel library: the ops a model's forward pass needs, on device memory, enqueued on a
// KernelContext's stream (asynchronous; nothing here synchronizes unless it says so). Activations
// are bf16 (or float where an overload says so) and every kernel accumulates in float32. Every
// pointer is device memory unless named *_host; vectors of bf16 rows must be 16-byte aligned.
// Built for sm_80 and newer (bf16 tensor-core mma); tuned for sm_90 (H100/H200).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "backend/cuda/kernel_context.h"

namespace mistral::cuda {

using bf16 = __nv_bfloat16;

// ---------------------------------------------------------------- linear layers

enum class WeightFormat : uint8_t {
  kBF16,  // data: bf16 [n, k] row-major
  kInt8,  // data: int8 q [n, k]; w[r][c] = scales[r][c / 32] * q[r][c]
  // data: uint8 [n, k / 2]; each group of 32 elements is 16 bytes whose byte j holds element j in
  // its low nibble and element j + 16 in its high nibble, unsigned with offset 8:
  // w[r][c] = scales[r][c / 32] * (nibble - 8) (ggml's Q4_0 order, scales kept apart).
  kInt4,
};
inline constexpr int64_t kQuantGroup = 32;

const char* weight_format_name(WeightFormat format);

// A weight matrix W [n, k] (nn.Linear layout) in device memory, borrowed. k must be a multiple of
// 8 (bf16) or 32 (quantized), and `data` 16-byte aligned.
struct DeviceWeight {
  WeightFormat format = WeightFormat::kBF16;
  int64_t n = 0;
  int64_t k = 0;
  const void* data = nullptr;
  const __half* scales = nullptr;  // f16 [n, k / 32] for kInt8 / kInt4, else unused

  size_t data_bytes() const;
  size_t scale_bytes() const;
};

// Decode GEMV y[m, n] = x[m, k] * W^T for 1 <= m <= kMaxGemvRows. Two kernels:
//  - default options: gemv_rows.cu, a warp per row of W streaming it with 8 loads in flight per
//    lane; bf16 in float32 FMA; int8 / int4 with x first quantized to int8 per group of 32 (the
//    CPU backend's rule) and exact __dp4a group sums times the weight scale times dx.
//  - explicit GemvOptions (or MISTRAL_GEMV_KERNEL=pipelined): gemv.cu, W streamed through a
//    cp.async shared-memory pipeline, its rows shared evenly among one-warp blocks (stream-K), the
//    products on tensor cores (mma m16n8k16 bf16, float32 accumulation), quantized weights
//    expanded exactly to bf16 in registers and x not quantized.
// Either way results do not depend on m (a row of x gives the same bits alone or in a batch) and
// are the same on every run (fixed-order reductions). Needs gemv_scratch_bytes of scratch.
// For tests and tuning: `warps` > 0 replaces the tile kernel's grid (each warp streams an equal
// share of W; shares that split a tile's rows are added by the last warp to finish); `stages`
// picks 3 or 4 pipeline stages.
struct GemvOptions {
  int warps = 0;
  int stages = 0;
};
inline constexpr int64_t kMaxGemvRows = 8;
void gemv(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, float* y,
          const GemvOptions& options = {});
void gemv(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, bf16* y,
          const GemvOptions& options = {});
// Scratch bytes gemv needs for this weight shape (0 when no tile is shared between warps).
size_t gemv_scratch_bytes(const KernelContext& ctx, const DeviceWeight& w,
                          const GemvOptions& options = {});

// Decode GEMV of one row of x, y = x * W^T, with the ops around it folded in (gemv_fused.cu):
//  - norm: x is first replaced by rmsnorm(x) with this weight [k] and eps, as rmsnorm<bf16>;
//  - output kStore: y[n] = the product; kAddTo: y[n] += bf16(product), rounded (the residual add,
//    as add_rmsnorm's); kSwiGLU: W's rows are [gate; up], n / 2 each, and
//    y[n / 2] = bf16(bf16(silu(g)) * u) with g, u the products rounded to bf16 (as silu_mul).
// With int8 / int4 weights x is quantized per group of 32 as gemv does, inside the kernel. Each
// result has the same bits as gemv with m = 1 and the separate ops. Float y: kStore only.
// Needs no scratch. gemv_fused_supported says whether a weight and fusion fit the kernel (what
// x needs in shared memory: k at most 24,576 for bf16 weights with a norm, 39,296 for quantized
// weights).
enum class GemvOutput : uint8_t { kStore, kAddTo, kSwiGLU };
struct GemvFusion {
  const bf16* norm = nullptr;  // [k], or null: no norm
  float eps = 0.0f;
  GemvOutput output = GemvOutput::kStore;
};
bool gemv_fused_supported(const DeviceWeight& w, const GemvFusion& f);
void gemv_fused(KernelContext& ctx, const bf16* x, const DeviceWeight& w, const GemvFusion& f,
                bf16* y);
void gemv_fused(KernelContext& ctx, const bf16* x, const DeviceWeight& w, const GemvFusion& f,
                float* y);

// Prefill GEMM y[m, n] = x[m, k] * W^T through cuBLASLt: bf16 inputs, float32 accumulation.
// Quantized weights take a dequantize-to-bf16 path for now: tiles of rows of W are expanded to
// bf16 (bf16(scale * q): one more rounding than gemv's exact expansion) in the context's scratch,
// a tile at a time (dequant_tile_rows), each then multiplied by cuBLASLt.
void gemm(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, float* y);
void gemm(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, bf16* y);

// Rows of W per dequantized tile of gemm: at most tile_bytes of bf16 rows (but 16 rows at least)
// and what the scratch holds, a multiple of 16 (cuBLASLt prefers aligned tiles), with the n rows
// cut into tiles of equal size so that no GEMM gets a small remainder; 0 when the scratch holds no
// 16 rows. gemm's tile_bytes: MISTRAL_DEQUANT_TILE_MB, else kDequantTileMB (MiB).
inline constexpr int kDequantTileMB = 256;
int64_t dequant_tile_rows(int64_t n, int64_t k, size_t scratch_bytes, size_t tile_bytes);
// The scratch gemm uses for W's tiles when it has as much as it wants (0 for bf16 W). With less,
// its tiles are smaller.
size_t gemm_scratch_bytes(const DeviceWeight& w);

// Mixed-input GEMM y[m, n] = x[m, k] * W^T for int8 / int4 W and 1 <= m <= kMaxMixedRows
// (gemm_mixed.cu): W read once as stored and expanded in registers to gemm's values,
// bf16(scale * q), the products on tensor cores in float32. linear() takes it for batched decode
// steps and short prompts (kMaxGemvRows < m <= gemm_mixed_max_rows()), where gemm's round trip
// of a bf16 copy of W through memory costs more than the products. Results do not depend on m (a
// row of x gives the same bits in any batch it takes) and are the same on every run. Needs
// gemm_mixed_scratch_bytes of scratch (split-k partial sums).
inline constexpr int64_t kMaxMixedRows = 32;
void gemm_mixed(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, float* y);
void gemm_mixed(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, bf16* y);
size_t gemm_mixed_scratch_bytes(const KernelContext& ctx, const DeviceWeight& w);
// kMaxMixedRows, or MISTRAL_MIXED_MAX_ROWS (0 to kMaxMixedRows; 0 sends every quantized m >
// kMaxGemvRows to gemm) for comparisons of the two paths.
int64_t gemm_mixed_max_rows();

// gemv for m <= kMaxGemvRows (or MISTRAL_GEMV_MAX_ROWS, 0 to kMaxGemvRows, for comparisons);
// gemm_mixed for int8 / int4 W up to gemm_mixed_max_rows(); else gemm.
void linear(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, float* y);
void linear(KernelContext& ctx, const bf16* x, int64_t m, const DeviceWeight& w, bf16* y);
// The scratch linear() needs for m rows of x: gemv_scratch_bytes for the rows it gives the GEMV
// (kMaxGemvRows, or fewer with MISTRAL_GEMV_MAX_ROWS); above, the larger of gemm_mixed's and
// gemm's, which covers every m it gives either.
size_t linear_scratch_bytes(const KernelContext& ctx, const DeviceWeight& w, int64_t m);

// out[r - row_begin][c] = bf16(w[r][c]) for rows [row_begin, row_end).
void dequantize(KernelContext& ctx, const DeviceWeight& w, int64_t row_begin, int64_t row_end,
                bf16* out);

// ---------------------------------------------------------------- element-wise, row-wise
// T is float or bf16. With bf16, each op rounds where Hugging Face's bf16 model rounds (each torch
// op on bf16 tensors computes in float32 and rounds its result); with float they are the CPU
// backend's float32 formulas.

// y = x / sqrt(mean(x^2) + eps) * weight over rows of n, mean in float32. bf16: as HF's
// MistralRMSNorm, weight * bf16(x_f32 * rsqrt(var + eps)).
template <typename T>
void rmsnorm(KernelContext& ctx, const T* x, int64_t m, int64_t n, const T* weight, float eps,
             T* y);
// residual += delta (rounded to T), then y = rmsnorm(residual): the decoder layer's residual add
// fused with the next norm. y may be delta.
template <typename T>
void add_rmsnorm(KernelContext& ctx, T* residual, const T* delta, int64_t m, int64_t n,
                 const T* weight, float eps, T* y);
// Rotates x[tokens, heads, head_dim] in place (rotate_half): for i < d/2, with
// angle = float(position) * inv_freq[i] in float32, x_i' = x_i cos - x_{i+d/2} sin and
// x_{i+d/2}' = x_{i+d/2} cos + x_i sin. inv_freq [d/2] (device) is a model constant, computed
// once by rope_inv_freq. bf16: cos and sin are rounded to bf16 and each product and the sum are
// rounded, as in HF's apply_rotary_pos_emb.
template <typename T>
void rope(KernelContext& ctx, T* x, int64_t tokens, int64_t heads, int64_t head_dim,
          const int64_t* positions, const float* inv_freq);
// rope of q [tokens, heads, head_dim] and k [tokens, kv_heads, head_dim] at the same positions in
// one launch (each value as rope computes it).
template <typename T>
void rope_qk(KernelContext& ctx, T* q, T* k, int64_t tokens, int64_t heads, int64_t kv_heads,
             int64_t head_dim, const int64_t* positions, const float* inv_freq);
// inv_freq_i = 1 / theta^(2i/d) as transformers and the CPU backend compute it: a float32 power
// of float32 operands (std::pow), then a float32 reciprocal. Host function.
std::vector<float> rope_inv_freq(int64_t head_dim, double theta);
// out = silu(gate) * up. bf16: bf16(bf16(silu(gate)) * up).
template <typename T>
void silu_mul(KernelContext& ctx, const T* gate, const T* up, T* out, int64_t n);
// x += y.
template <typename T>
void add(KernelContext& ctx, T* x, const T* y, int64_t n);
// out[i] = table[ids[i]] (exact). Ids are validated by the caller; an id outside [0, vocab) gives
// a zero row rather than a read out of bounds.
template <typename T>
void embed(KernelContext& ctx, const bf16* table, int64_t vocab, int64_t hidden, const int32_t* ids,
           int64_t n, T* out);

// ---------------------------------------------------------------- attention

// Where slot s of row b of a KV cache lives (backend.h's KvBlockTable): with block_table set, the
// cache is a pool of blocks of block_size positions and the slot is at position
// block_table[b * blocks_per_row + s / block_size] * block_size + s % block_size; with a null
// table at position b * capacity + s (the pool is [B, capacity, ...]). The kernels read the
// table when they run (one int32 load per key), so a recorded launch follows its contents.
// block_size must fit in 31 bits.
//
// The device form of backend.h's AttentionArgs, with the same mask: the key at sequence index k
// is visible to the query at sequence index q iff the key is not padding, k <= q, and, with a
// sliding window W > 0, q - k < W. Queries see the cache (a ring of `capacity` slots per row,
// filled before this call, stored as above) and the keys of this call. head_dim is 64 or 128 for
// the tensor-core kernels (attention_generic takes the others); num_heads is a multiple of
// num_kv_heads (grouped-query attention).
struct AttentionParams {
  int64_t batch = 0;
  int64_t new_tokens = 0;  // T
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t first_seq_index = 0;  // sequence index of the first new token (same for every row)
  // When set, the kernels read first_seq_index from this device scalar instead, so that a
  // recorded launch (CUDA graph) stays valid as the sequence grows.
  const int64_t* first_seq_index_device = nullptr;
  int64_t sliding_window = 0;  // 0: none
  float scale = 1.0f;          // 1/sqrt(head_dim)

  const bf16* q = nullptr;             // [B, T, heads, head_dim], rotary applied
  const bf16* k = nullptr;             // [B, T, kv_heads, head_dim], rotary applied
  const bf16* v = nullptr;             // [B, T, kv_heads, head_dim]
  const uint8_t* new_valid = nullptr;  // [B, T], 1 real token, 0 padding

  int64_t capacity = 0;
  int64_t block_size = 0;                   // paging, as above (unused without a table)
  int64_t blocks_per_row = 0;               // ceil(capacity / block_size)
  const int32_t* block_table = nullptr;     // [B, blocks_per_row] physical block ids, or null
  const bf16* k_cache = nullptr;            // [positions, kv_heads, head_dim]
  const bf16* v_cache = nullptr;            // [positions, kv_heads, head_dim]
  const int64_t* slot_seq_index = nullptr;  // [capacity], -1 for empty slots
  const uint8_t* slot_valid = nullptr;      // [B, capacity]

  bf16* out = nullptr;  // [B, T, heads, head_dim]; queries with no visible key get zeros
};

// Chooses decode (new_tokens * group <= kMaxDecodeRows) or prefill, or attention_generic for a
// head_dim other than 64 and 128.
void attention(KernelContext& ctx, const AttentionParams& p);
// Whether attention(ctx, p) takes attention_decode (and so needs its scratch).
bool uses_decode_attention(const AttentionParams& p);
// One warp per query, float32 online softmax, any head_dim up to 256 (slow; for small models).
void attention_generic(KernelContext& ctx, const AttentionParams& p);
// Flash attention (FlashAttention-2 scheme) on tensor cores: 64 query rows per block against
// 64-key tiles staged in shared memory, online softmax in float32, P rounded to bf16 for P*V as
// in HF's bf16 eager attention. Any T.
void attention_prefill(KernelContext& ctx, const AttentionParams& p);
// Flash-decoding: the keys are split across blocks, each keeping a float32 online softmax; the
// splits are merged in the kernel when they fit a thread block cluster (sm_90), else by a second
// kernel. Needs new_tokens * group <= kMaxDecodeRows and attention_decode_scratch_bytes of
// scratch (0 when the merge is in the kernel).
inline constexpr int64_t kMaxDecodeRows = 16;
void attention_decode(KernelContext& ctx, const AttentionParams& p);
size_t attention_decode_scratch_bytes(const KernelContext& ctx, const AttentionParams& p);
// Rope and the cache write folded into decode attention, for one new token per row: p.q and p.k
// hold q and k before rope. Gives the bits of rope_qk_store_kv (p's cache, these positions) then
// attention_decode: the same output, and the rotated new keys and their values in the cache;
// q and k in memory are left as they were. Needs attention_decode_rope_supported(p), and the
// scratch of attention_decode.
struct DecodeRope {
  const int64_t* positions = nullptr;  // [B] rope position of each row's new token
  const float* inv_freq = nullptr;     // [head_dim / 2]
  bf16* k_cache = nullptr;             // p.k_cache and p.v_cache, to write the new token into
  bf16* v_cache = nullptr;
};
bool attention_decode_rope_supported(const AttentionParams& p);
void attention_decode_rope_store(KernelContext& ctx, const AttentionParams& p, const DecodeRope& r);

// ---------------------------------------------------------------- KV cache writes

// Token t of row b (the last min(T, capacity) tokens) goes to slot (first_seq_index + t) %
// capacity of the bf16 ring, stored (paged or not) as in AttentionParams, exactly (a copy).
struct KvStoreParams {
  int64_t batch = 0;
  int64_t new_tokens = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t capacity = 0;
  int64_t block_size = 0;  // as in AttentionParams
  int64_t blocks_per_row = 0;
  const int32_t* block_table = nullptr;
  int64_t first_seq_index = 0;
  const int64_t* first_seq_index_device = nullptr;  // as in AttentionParams
  const bf16* k = nullptr;                          // [B, T, kv_heads, head_dim]
  const bf16* v = nullptr;
  bf16* k_cache = nullptr;  // [positions, kv_heads, head_dim]
  bf16* v_cache = nullptr;
};
void store_kv(KernelContext& ctx, const KvStoreParams& p);
// rope_qk<bf16> of q [B * T, heads, head_dim] and k = p.k (B * T = p.batch * p.new_tokens tokens,
// p.num_kv_heads, p.head_dim), then store_kv(p) of the rotated k and of p.v, in one kernel: the
// same bits in q, k and the cache as the two ops.
void rope_qk_store_kv(KernelContext& ctx, bf16* q, int64_t heads, const int64_t* positions,
                      const float* inv_freq, const KvStoreParams& p);
// For the last min(T, capacity) tokens: slot s = (first_seq_index + t) % capacity gets
// slot_seq_index[s] = first_seq_index + t and slot_valid[b][s] = new_valid[b][t].
// first_seq_index_device, when set, replaces first_seq_index (as in AttentionParams).
void record_kv_slots(KernelContext& ctx, int64_t batch, int64_t new_tokens, int64_t first_seq_index,
                     const int64_t* first_seq_index_device, int64_t capacity,
                     const uint8_t* new_valid, int64_t* slot_seq_index, uint8_t* slot_valid);

// ---------------------------------------------------------------- sampling

// Per-row sampling parameters (device array), validated by the caller as SamplingParams are.
struct SampleParams {
  int32_t greedy = 0;  // nonzero: argmax, the rest ignored, no random number consumed
  float temperature = 1.0f;
  int32_t top_k = 0;  // <= 0 or >= vocab: off
  float top_p = 1.0f;
};

// xoshiro256** state, seeded exactly as sampling/rng.h's Xoshiro256 (SplitMix64), so a seed gives
// the same stream on the device as on the CPU.
struct RngState {
  uint64_t s[4];
};
// Seeds states[i] from seeds_host[i]; copies synchronously with respect to the host.
void init_rng(KernelContext& ctx, const uint64_t* seeds_host, int64_t rows, RngState* states);

// ids[r] = the lowest index of the largest non-NaN logit of row r (0 if all are NaN).
void argmax(KernelContext& ctx, const float* logits, int64_t rows, int64_t vocab, int32_t* ids);
// One token per row, only ids leave the device. Greedy rows: argmax. Other rows, in HF's order:
// NaN -> -inf; x / temperature; top-k keeps entries >= the k-th largest (ties stay); top-p sorts
// ascending (ties by ascending id), removes entries whose cumulative probability is <= 1 - top_p
// and always keeps the largest; then one draw u in [0, 1) from the row's stream and the first id
// (ascending) whose running weight exp(x - max) exceeds u * total. When nothing is left above
// -inf, the argmax of the raw row. See sampling.cu for how the cut is found without a sort.
void sample(KernelContext& ctx, const float* logits, int64_t rows, int64_t vocab,
            const SampleParams* params, RngState* states, int32_t* ids);

#if MISTRAL_CUDA_TRACE
// Diagnostic builds: point the traced kernels (trace.cuh) of gemv_fused.cu and
// attention_decode.cu at a ring in device memory (null: stop). TraceRecorder calls these.
struct TraceRing;
void trace_attach_gemv_fused(TraceRing* ring);
void trace_attach_attention_decode(TraceRing* ring);
#endif

}  // namespace mistral::cuda
