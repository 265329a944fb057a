// CPU implementations of the backend op set. Each kernel lives in its own file; every function
// is thread-safe and parallelizes internally over the global ThreadPool. Kernels select their
// instruction set at run time (GCC target_clones), so the binary runs on any x86-64.
#pragma once

#include <cstdint>

#include "backend/backend.h"

namespace mistral::cpu {

void matmul(const float* x, int64_t m, const Tensor& w, float* y);
void embed(const Tensor& table, const int32_t* ids, int64_t n, float* out);
void rmsnorm(const float* x, int64_t m, const Tensor& weight, float eps, float* y);
void rope(float* x, int64_t tokens, int64_t heads, int64_t head_dim, const int64_t* positions,
          double theta);
void attention(const AttentionArgs& args);
void silu_mul(const float* gate, const float* up, float* out, int64_t n);
void add(float* x, const float* y, int64_t n);
void store_kv(const KvWriteArgs& args);  // F32 activations
void record_kv_slots(int64_t batch, int64_t new_tokens, int64_t first_seq_index, int64_t capacity,
                     const uint8_t* new_valid, int64_t* slot_seq_index, uint8_t* slot_valid);

// Converts n elements of a F32/BF16/F16 row to F32.
void row_to_f32(const void* src, DType dtype, int64_t n, float* dst);
// Dot product of two F32 vectors (vectorized; summation order differs from a plain loop).
float dot_f32(const float* a, const float* b, int64_t n);
// sum_i x[i] * row[i] and y[i] += a * row[i] over a row stored as F32, BF16, F16 or I8 (the raw
// integers: the caller applies an I8 row's scale), widened in registers. row_dot of an F32 row is
// dot_f32; row_axpy rounds a * row[i] before adding, as a plain loop does. Hand-written AVX-512
// where cpu_features() allows it, portable loops otherwise.
float row_dot(const float* x, const void* row, DType dtype, int64_t n);
void row_axpy(float a, const void* row, DType dtype, int64_t n, float* y);

}  // namespace mistral::cpu
