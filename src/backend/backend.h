// Backend: the op set the model's forward pass calls (ARCHITECTURE.md rule 1). The model never
// touches SIMD or device code; it hands a backend pointers to activations it allocated through the
// backend and weight tensors the backend accepted. A backend is stateless between calls apart from
// its thread pool; one forward pass at a time per backend.
//
// Shapes are row-major. Activations are F32. Weight matrices are [N, K] (nn.Linear layout) in the
// dtype the backend reports as supported, or quantized (core/quant.h) where it supports that. The
// KV cache may be stored narrower (AttentionArgs).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace mistral {

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
  int64_t sliding_window = 0;   // 0: none
  float scale = 1.0f;           // 1/sqrt(head_dim)

  const float* q = nullptr;            // [B, T, heads, head_dim], rotary already applied
  const float* k = nullptr;            // [B, T, kv_heads, head_dim], rotary already applied
  const float* v = nullptr;            // [B, T, kv_heads, head_dim]
  const uint8_t* new_valid = nullptr;  // [B, T], 1 for real tokens, 0 for padding

  // The cache before this call: a ring of `capacity` slots per row, stored as cache_dtype: F32,
  // BF16, F16, or I8, where a (row, slot, kv head) vector of head_dim int8 values x holds
  // x * scale with one float scale per vector (k_scale / v_scale; null for the other types).
  int64_t capacity = 0;
  DType cache_dtype = DType::kF32;
  const void* k_cache = nullptr;            // [B, capacity, kv_heads, head_dim] of cache_dtype
  const void* v_cache = nullptr;            // [B, capacity, kv_heads, head_dim] of cache_dtype
  const float* k_scale = nullptr;           // I8 only: [B, capacity, kv_heads]
  const float* v_scale = nullptr;           // I8 only: [B, capacity, kv_heads]
  const int64_t* slot_seq_index = nullptr;  // [capacity], -1 for empty slots
  const uint8_t* slot_valid = nullptr;      // [B, capacity]

  float* out = nullptr;  // [B, T, heads, head_dim]; rows of queries with no visible key are zero
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // y[M, N] = x[M, K] * w[N, K]^T, summed in F32. With BF16 weights x is first rounded to bf16
  // (round to nearest even), as Hugging Face's bf16 model feeds every nn.Linear a bf16 tensor;
  // F32 weights see x as it is. The output is F32 either way.
  virtual void matmul(const float* x, int64_t m, const Tensor& w, float* y) = 0;
  // out[i] = table[ids[i]] as F32; ids already validated to be in range.
  virtual void embed(const Tensor& table, const int32_t* ids, int64_t n, float* out) = 0;
  // y[M, N] = x / sqrt(mean(x^2) + eps) * weight, accumulated in F32 as Hugging Face does.
  virtual void rmsnorm(const float* x, int64_t m, const Tensor& weight, float eps, float* y) = 0;
  // Rotates x[tokens, heads, head_dim] in place with rotate_half rotary embeddings at the given
  // position ids.
  virtual void rope(float* x, int64_t tokens, int64_t heads, int64_t head_dim,
                    const int64_t* positions, double theta) = 0;
  virtual void attention(const AttentionArgs& args) = 0;
  // out[i] = silu(gate[i]) * up[i].
  virtual void silu_mul(const float* gate, const float* up, float* out, int64_t n) = 0;
  // x[i] += y[i].
  virtual void add(float* x, const float* y, int64_t n) = 0;
  // Whether matmul accepts weights of this dtype as they are (else the loader converts them).
  virtual bool supports_weight_dtype(DType dtype) const = 0;
  // Whether matmul and embed accept weights quantized this way (core/quant.h).
  virtual bool supports_quantization(QuantType type) const = 0;
};

// The CPU backend, using the process-wide thread pool.
std::unique_ptr<Backend> make_cpu_backend();

}  // namespace mistral
