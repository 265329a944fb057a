// Backend: the op set the model's forward pass calls (ARCHITECTURE.md rule 1). The model never
// touches SIMD or device code; it hands a backend pointers to memory it allocated through the
// backend (host memory for the CPU, device memory for CUDA) and weight tensors the backend placed
// (place_weight). Host data crosses only through to_device / to_host. One forward pass at a time
// per backend; ops may run asynchronously in the backend's order, and to_host waits for them.
//
// Shapes are row-major. Activations are of activation_dtype() (F32 on the CPU, BF16 on CUDA)
// and are passed as void pointers. Weight matrices are [N, K] (nn.Linear layout) in a dtype the
// backend reports as supported, or quantized (core/quant.h) where it supports that. The KV cache
// may be stored narrower (AttentionArgs).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace mistral {

// The paged layout of a KV cache (model/kv_cache.h): the cache of every layer is a pool of
// fixed-size blocks of block_size positions, [num_blocks, block_size, kv_heads, head_dim], and
// row b's logical slot s lives at position table[b * blocks_per_row + s / block_size] *
// block_size + s % block_size of the pool. A null table means no paging: row b's slots are
// positions b * capacity ... (the pool is [B, capacity, kv_heads, head_dim]; block_size and
// blocks_per_row are then ignored). The table is backend memory that ops read when they run, so
// a recording (begin_capture) follows later changes to its contents.
struct KvBlockTable {
  int64_t block_size = 0;
  int64_t blocks_per_row = 0;      // ceil(capacity / block_size)
  const int32_t* table = nullptr;  // [B, blocks_per_row] physical block ids, or null
};

// Position in the pool of logical slot s of row b (a host function for host-memory tables).
inline int64_t kv_cache_position(const KvBlockTable& blocks, int64_t capacity, int64_t b,
                                 int64_t s) {
  if (blocks.table == nullptr) return b * capacity + s;
  const int64_t block = blocks.table[b * blocks.blocks_per_row + s / blocks.block_size];
  return block * blocks.block_size + s % blocks.block_size;
}

// Everything attention needs for one layer of one forward call.
// Queries attend to (a) the cached keys from earlier calls and (b) the keys of this call, under
// Hugging Face's mask: key at sequence index k is visible to the query at sequence index q iff the
// key is not padding, k <= q, and, with a sliding window W, q - k < W.
struct AttentionArgs {
  int64_t batch = 0;
  int64_t new_tokens = 0;  // T
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t first_seq_index = 0;  // sequence index of the first new token (same for every row)
  // The same value in backend memory (or null). A backend that records ops for replay
  // (begin_capture) reads it there, so that a recording stays valid as the sequence grows.
  const int64_t* first_seq_index_device = nullptr;
  int64_t sliding_window = 0;  // 0: none
  float scale = 1.0f;          // 1/sqrt(head_dim)

  // Activations (activation_dtype()).
  const void* q = nullptr;             // [B, T, heads, head_dim], rotary already applied
  const void* k = nullptr;             // [B, T, kv_heads, head_dim], rotary already applied
  const void* v = nullptr;             // [B, T, kv_heads, head_dim]
  const uint8_t* new_valid = nullptr;  // [B, T], 1 for real tokens, 0 for padding

  // The cache before this call: a ring of `capacity` logical slots per row, stored as
  // cache_dtype: F32, BF16, F16, or I8, where a (row, slot, kv head) vector of head_dim int8
  // values x holds x * scale with one float scale per vector (k_scale / v_scale; null for the
  // other types). Where a slot lives: kv_cache_position (paged through blocks.table, or in
  // [B, capacity] rows when that is null). P is the pool's number of positions.
  int64_t capacity = 0;
  KvBlockTable blocks;
  DType cache_dtype = DType::kF32;
  const void* k_cache = nullptr;            // [P, kv_heads, head_dim] of cache_dtype
  const void* v_cache = nullptr;            // [P, kv_heads, head_dim] of cache_dtype
  const float* k_scale = nullptr;           // I8 only: [P, kv_heads]
  const float* v_scale = nullptr;           // I8 only: [P, kv_heads]
  const int64_t* slot_seq_index = nullptr;  // [capacity], -1 for empty slots
  const uint8_t* slot_valid = nullptr;      // [B, capacity]

  void* out = nullptr;  // [B, T, heads, head_dim]; rows of queries with no visible key are zero
};

// Writing one layer's keys and values of T new tokens into the cache ring: token t of row b goes
// to logical slot (first_seq_index + t) % capacity, at kv_cache_position(blocks, capacity, b,
// slot), converted to cache_dtype (I8: one scale per vector, see model/kv_cache.h); only the last
// min(T, capacity) tokens are written.
struct KvWriteArgs {
  int64_t batch = 0;
  int64_t new_tokens = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t capacity = 0;
  KvBlockTable blocks;  // as in AttentionArgs
  int64_t first_seq_index = 0;
  const int64_t* first_seq_index_device = nullptr;  // as in AttentionArgs
  const void* k = nullptr;                          // [B, T, kv_heads, head_dim] activations
  const void* v = nullptr;
  DType cache_dtype = DType::kF32;
  void* k_cache = nullptr;  // [P, kv_heads, head_dim], as in AttentionArgs
  void* v_cache = nullptr;
  float* k_scale = nullptr;  // I8 only: [P, kv_heads]
  float* v_scale = nullptr;
};

// One sequence's sampling parameters, for sampling on the backend (sampling/sampling_params.h's
// SamplingParams with repetition_penalty 1 and min_p 0: what a backend samples).
struct SamplingRow {
  bool greedy = false;
  float temperature = 1.0f;
  int32_t top_k = 0;  // 0: off
  float top_p = 1.0f;
  uint64_t seed = 0;
};

// What Backend::new_sampler made: `rows` sequences' parameters and streams, opaque.
struct SamplerState {
  int64_t rows = 0;
  std::shared_ptr<void> state;
};

// Backend memory: freed when the last copy goes.
struct Buffer {
  std::shared_ptr<void> owner;
  void* data = nullptr;
  size_t bytes = 0;
  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

// What Backend::fused_matmul does around y = x * W^T: the neighbours of a decoder layer's matrix
// products that a backend may fold into the product at decode (one kernel instead of three).
struct MatmulFusion {
  // x is first replaced by rmsnorm(x) with this weight [k] and eps (as rmsnorm), or not (null).
  const Tensor* norm = nullptr;
  float eps = 0.0f;
  // W's rows are [gate; up], n / 2 each: y[m, n / 2] = silu(x Wg^T) * (x Wu^T) (as silu_mul).
  bool swiglu = false;
  // y += the product (as add: the residual add) instead of y = the product. Not with swiglu.
  bool residual = false;
  // Activation memory of m * (k + n) values that a backend running the ops one by one may use
  // (the default does); untouched by one that fuses them.
  void* scratch = nullptr;
};

// A copy to the host begun by Backend::start_download. wait() blocks until the copy is done and
// writes its bytes to dst_host; call it at most once. Must not outlive its backend; dropped without
// a wait, the copy is simply not read.
class Download {
 public:
  virtual ~Download() = default;
  virtual void wait(void* dst_host) = 0;
};

// What a weight tensor is used for, so a backend can place it in the form its op reads.
enum class WeightUse : uint8_t { kMatrix, kEmbedding, kNorm };

class Backend {
 public:
  virtual ~Backend() = default;
  // "cpu", "cuda:0", ...: memory allocated by one backend is usable by another of the same name.
  virtual std::string name() const = 0;
  // The type of every activation buffer the ops read and write.
  virtual DType activation_dtype() const = 0;

  // ---- memory
  // `bytes` of backend memory (uninitialized); an error names `what`, the size and what is free.
  virtual Result<Buffer> allocate(size_t bytes, const std::string& what) = 0;
  // Copies between host and backend memory; to_host waits for every op queued before it.
  virtual void to_device(void* dst, const void* src_host, size_t bytes) = 0;
  virtual void to_host(void* dst_host, const void* src, size_t bytes) = 0;
  // Begins copying `bytes` of backend memory to the host after the ops queued before it, and
  // returns without waiting for them (Download::wait finishes it). The default copies at once
  // (to_host), which is right for a backend whose ops are done when they return.
  virtual std::unique_ptr<Download> start_download(const void* src, size_t bytes);
  // A copy within backend memory, in the order of the ops.
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  // Puts a weight the loader produced (host memory) where and how the ops read it; a host
  // backend returns it unchanged. Errors name `what` (e.g. "layer 3 wq").
  virtual Result<Tensor> place_weight(const Tensor& host, WeightUse use, const std::string& what) {
    return host;
  }
  // Places matrices of equal in_features and type (as place_weight would) as one matrix, their
  // rows one after another: returns that matrix followed by one row view per input, or nothing
  // when the backend does not join matrices (then each is placed on its own).
  virtual Result<std::vector<Tensor>> place_concatenated(const std::vector<Tensor>& hosts,
                                                         const std::string& what) {
    return std::vector<Tensor>();
  }

  // ---- ops
  // y[M, N] = x[M, K] * w[N, K]^T, summed in F32. With BF16 weights x is first rounded to bf16
  // (round to nearest even), as Hugging Face's bf16 model feeds every nn.Linear a bf16 tensor;
  // F32 weights see x as it is. (Quantized weights: see core/quant.h and each backend.)
  virtual void matmul(const void* x, int64_t m, const Tensor& w, void* y) = 0;
  // The same with F32 output whatever the activation type (the logits).
  virtual void matmul_f32_out(const void* x, int64_t m, const Tensor& w, float* y) = 0;
  // out[i] = table[ids[i]]; ids (backend memory) already validated to be in range.
  virtual void embed(const Tensor& table, const int32_t* ids, int64_t n, void* out) = 0;
  // y[M, N] = x / sqrt(mean(x^2) + eps) * weight, accumulated in F32 as Hugging Face does.
  virtual void rmsnorm(const void* x, int64_t m, const Tensor& weight, float eps, void* y) = 0;
  // Rotates x[tokens, heads, head_dim] in place with rotate_half rotary embeddings at the given
  // position ids (backend memory).
  virtual void rope(void* x, int64_t tokens, int64_t heads, int64_t head_dim,
                    const int64_t* positions, double theta) = 0;
  virtual void attention(const AttentionArgs& args) = 0;
  virtual void store_kv(const KvWriteArgs& args) = 0;
  // Records T new tokens in the cache's slot table: for the last min(T, capacity) tokens,
  // slot s = (first_seq_index + t) % capacity gets slot_seq_index[s] = first_seq_index + t and
  // slot_valid[b][s] = new_valid[b][t]. All pointers are backend memory;
  // first_seq_index_device as in AttentionArgs.
  virtual void record_kv_slots(int64_t batch, int64_t new_tokens, int64_t first_seq_index,
                               const int64_t* first_seq_index_device, int64_t capacity,
                               const uint8_t* new_valid, int64_t* slot_seq_index,
                               uint8_t* slot_valid) = 0;
  // Rotates q [tokens, heads, head_dim] and k [tokens, kv_heads, head_dim] as rope does, at the
  // same positions: one op for both (the default runs rope twice).
  virtual void rope_qk(void* q, void* k, int64_t tokens, int64_t heads, int64_t kv_heads,
                       int64_t head_dim, const int64_t* positions, double theta) {
    rope(q, tokens, heads, head_dim, positions, theta);
    rope(k, tokens, kv_heads, head_dim, positions, theta);
  }
  // rope_qk, then store_kv(store) of the rotated k and of v (store.k and store.v are k and v): one
  // op for both where the backend fuses them (the default runs the two).
  virtual void rope_qk_store_kv(void* q, void* k, int64_t tokens, int64_t heads, int64_t kv_heads,
                                int64_t head_dim, const int64_t* positions, double theta,
                                const KvWriteArgs& store) {
    rope_qk(q, k, tokens, heads, kv_heads, head_dim, positions, theta);
    store_kv(store);
  }
  // rope_qk_store_kv(q, k, ...) at these positions, then attention(args), for one new token per
  // row: args.q and args.k are q and k, and store writes args' cache. One op where the backend
  // folds rope and the cache write into attention (q and k may then stay unrotated in memory);
  // the default runs the two.
  virtual void rope_store_attention(void* q, void* k, const int64_t* positions, double theta,
                                    const KvWriteArgs& store, const AttentionArgs& args) {
    rope_qk_store_kv(q, k, args.batch * args.new_tokens, args.num_heads, args.num_kv_heads,
                     args.head_dim, positions, theta, store);
    attention(args);
  }
  // x[m, n] += y (as add), then h = rmsnorm(x) with weight [n] (as rmsnorm): a decoder layer's
  // residual add fused with the norm that follows it. h may be y. The default runs add, rmsnorm.
  virtual void add_rmsnorm(void* x, const void* y, int64_t m, const Tensor& weight, float eps,
                           void* h) {
    add(x, y, m * weight.shape[0]);
    rmsnorm(x, m, weight, eps, h);
  }
  // matmul with the ops `fusion` names around it, giving what those ops give one after another.
  // The default runs them one after another: rmsnorm, matmul, silu_mul per row, add.
  virtual void fused_matmul(const void* x, int64_t m, const Tensor& w, void* y,
                            const MatmulFusion& fusion);
  // out[i] = silu(gate[i]) * up[i].
  virtual void silu_mul(const void* gate, const void* up, void* out, int64_t n) = 0;
  // x[i] += y[i].
  virtual void add(void* x, const void* y, int64_t n) = 0;

  // ---- sampling on the backend, so that only token ids cross to the host
  // Whether new_sampler / sample_tokens are available (else the caller samples on the host).
  virtual bool supports_sampling() const { return false; }
  // Parameters and random streams of `rows` sequences in backend memory; each row's stream is
  // seeded from its seed as sampling/rng.h's Xoshiro256 is.
  virtual Result<SamplerState> new_sampler(const std::vector<SamplingRow>& rows) {
    return error(name() + " backend does not sample tokens");
  }
  // ids[r] (backend memory) = the token sampling/sampler.h's Sampler picks from row r of logits
  // [sampler.rows, vocab] (backend memory) with the same parameters and stream: greedy rows take
  // the argmax and draw nothing, the others one draw each.
  virtual void sample_tokens(const SamplerState& sampler, const float* logits, int64_t vocab,
                             int32_t* ids) {}

  // ---- recording (CUDA graphs): ops issued between begin_capture and end_capture are recorded,
  // not run; replay runs the recording again with the same arguments, reading whatever the
  // memory they point at holds then, and returns false without running anything when the
  // recording is stale (memory the backend owns, e.g. its scratch, has moved since). No host
  // copies may be issued while recording.
  virtual bool supports_capture() const { return false; }
  virtual void begin_capture() {}
  virtual std::shared_ptr<void> end_capture() { return nullptr; }
  virtual bool replay(const void* recording) { return false; }

  // ---- capabilities
  // Whether matmul accepts weights of this dtype as they are (else the loader converts them to
  // preferred_weight_dtype()).
  virtual bool supports_weight_dtype(DType dtype) const = 0;
  virtual DType preferred_weight_dtype() const = 0;
  // Whether matmul and embed accept weights quantized this way (core/quant.h).
  virtual bool supports_quantization(QuantType type) const = 0;
  // Whether the KV cache can be stored as `dtype`, and the type used when none is asked for.
  virtual bool supports_kv_cache_dtype(DType dtype) const = 0;
  virtual DType default_kv_cache_dtype() const = 0;
  // Whether the first forward pass would be slower than the rest (lazily loaded device code,
  // library handles, first allocations) unless the model runs a short one at load.
  virtual bool wants_warm_up() const { return false; }
  // Bytes per second the backend's memory can deliver at best (0: unknown), for benchmarks.
  virtual double peak_memory_bandwidth() const { return 0; }
  // name() with the hardware, e.g. "cuda:0 (NVIDIA H100 80GB HBM3)".
  virtual std::string description() const { return name(); }
};

// The CPU backend, using the process-wide thread pool.
std::unique_ptr<Backend> make_cpu_backend();

// A backend by name: "cpu", "cuda" or "cuda:N" (the N-th GPU). An error says when this build has
// no CUDA backend or the device is missing.
Result<std::unique_ptr<Backend>> make_backend(const std::string& device);

}  // namespace mistral
