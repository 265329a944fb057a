// ModelWeights: every parameter of a Mistral decoder in one plain struct. Tensors are views:
// memory-mapped straight from the checkpoint where the on-disk type is the compute type, or
// owned buffers after a conversion. Matrices are row-major [out_features, in_features] as
// nn.Linear stores them. Norm weights are always F32. for_each_tensor drives loading, saving,
// conversion and (later) device upload from this one list.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "io/tensor_names.h"
#include "model/config.h"

namespace mistral {

struct LayerWeights {
  Tensor attn_norm;  // [hidden] F32
  Tensor wq;         // [heads * head_dim, hidden]
  Tensor wk;         // [kv_heads * head_dim, hidden]
  Tensor wv;         // [kv_heads * head_dim, hidden]
  Tensor wo;         // [hidden, heads * head_dim]
  Tensor mlp_norm;   // [hidden] F32
  Tensor w_gate;     // [intermediate, hidden]
  Tensor w_up;       // [intermediate, hidden]
  Tensor w_down;     // [hidden, intermediate]

  // Derived, not parameters of their own: where the backend placed matrices of one input as one
  // matrix (place_concatenated), that matrix, of which wq/wk/wv (w_gate/w_up) are row views.
  // Empty otherwise. for_each_tensor does not visit them.
  Tensor wqkv;       // [(heads + 2 * kv_heads) * head_dim, hidden]
  Tensor w_gate_up;  // [2 * intermediate, hidden]
};

struct ModelWeights {
  Tensor embedding;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // [hidden] F32
  Tensor lm_head;     // [vocab, hidden]; the same view as `embedding` when tied

  // Calls fn(role, layer, tensor&) for every distinct tensor (layer = -1 for global ones). A tied
  // lm_head is skipped: it is not a tensor of its own.
  template <typename Fn>
  void for_each_tensor(const ModelConfig& config, Fn&& fn) {
    fn(TensorRole::kEmbedding, int64_t{-1}, embedding);
    for (int64_t l = 0; l < static_cast<int64_t>(layers.size()); ++l) {
      LayerWeights& w = layers[l];
      fn(TensorRole::kAttnNorm, l, w.attn_norm);
      fn(TensorRole::kWq, l, w.wq);
      fn(TensorRole::kWk, l, w.wk);
      fn(TensorRole::kWv, l, w.wv);
      fn(TensorRole::kWo, l, w.wo);
      fn(TensorRole::kMlpNorm, l, w.mlp_norm);
      fn(TensorRole::kWGate, l, w.w_gate);
      fn(TensorRole::kWUp, l, w.w_up);
      fn(TensorRole::kWDown, l, w.w_down);
    }
    fn(TensorRole::kFinalNorm, int64_t{-1}, final_norm);
    if (!config.tie_word_embeddings) fn(TensorRole::kLmHead, int64_t{-1}, lm_head);
  }
};

// The shape a tensor of `role` must have under `config`.
std::vector<int64_t> expected_shape(const ModelConfig& config, TensorRole role);
// Norm weights are kept in F32 whatever the checkpoint holds.
bool is_norm_role(TensorRole role);

}  // namespace mistral
