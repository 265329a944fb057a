// The names tensors carry on disk. The model refers to its weights by role and layer only; this
// file alone knows the Hugging Face names (model.layers.N.self_attn.q_proj.weight, ...) and
// Mistral's native names (layers.N.attention.wq.weight, ...).
#pragma once

#include <cstdint>
#include <string>

namespace mistral {

enum class TensorRole : uint8_t {
  kEmbedding,  // [vocab, hidden]
  kFinalNorm,  // [hidden]
  kLmHead,     // [vocab, hidden]
  kAttnNorm,   // per layer [hidden]
  kWq,         // per layer [heads * head_dim, hidden]
  kWk,         // per layer [kv_heads * head_dim, hidden]
  kWv,         // per layer [kv_heads * head_dim, hidden]
  kWo,         // per layer [hidden, heads * head_dim]
  kMlpNorm,    // per layer [hidden]
  kWGate,      // per layer [intermediate, hidden]
  kWUp,        // per layer [intermediate, hidden]
  kWDown,      // per layer [hidden, intermediate]
};

enum class CheckpointLayout : uint8_t {
  kHuggingFace,    // config.json + model.safetensors[.index.json]
  kMistralNative,  // params.json + consolidated.safetensors
};

// `layer` is ignored for the three global roles.
std::string tensor_name(TensorRole role, int64_t layer, CheckpointLayout layout);

// Names that Hugging Face itself ignores when loading a Mistral checkpoint (older conversions
// stored the rotary inverse frequencies as a buffer).
bool is_ignorable_tensor_name(const std::string& name);

// Mistral's native q/k projections keep each head's rotary pairs interleaved (x0,x1),(x2,x3)...
// while Hugging Face's rotate_half convention wants the halves split. Reorders the rows of a
// [n_heads * head_dim, cols] matrix of `elem_size`-byte elements from the native order to the
// Hugging Face order (the permutation of transformers' convert_mistral_weights_to_hf.py), or back.
void permute_rotary_rows_native_to_hf(const void* src, void* dst, int64_t n_heads, int64_t head_dim,
                                      int64_t cols, size_t elem_size);
void permute_rotary_rows_hf_to_native(const void* src, void* dst, int64_t n_heads, int64_t head_dim,
                                      int64_t cols, size_t elem_size);

}  // namespace mistral
