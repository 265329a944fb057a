#include "io/tensor_names.h"

#include <cstring>

#include "core/check.h"

namespace mistral {

std::string tensor_name(TensorRole role, int64_t layer, CheckpointLayout layout) {
  const bool hf = layout == CheckpointLayout::kHuggingFace;
  const std::string prefix =
      hf ? "model.layers." + std::to_string(layer) + "." : "layers." + std::to_string(layer) + ".";
  switch (role) {
    case TensorRole::kEmbedding:
      return hf ? "model.embed_tokens.weight" : "tok_embeddings.weight";
    case TensorRole::kFinalNorm:
      return hf ? "model.norm.weight" : "norm.weight";
    case TensorRole::kLmHead:
      return hf ? "lm_head.weight" : "output.weight";
    case TensorRole::kAttnNorm:
      return prefix + (hf ? "input_layernorm.weight" : "attention_norm.weight");
    case TensorRole::kWq:
      return prefix + (hf ? "self_attn.q_proj.weight" : "attention.wq.weight");
    case TensorRole::kWk:
      return prefix + (hf ? "self_attn.k_proj.weight" : "attention.wk.weight");
    case TensorRole::kWv:
      return prefix + (hf ? "self_attn.v_proj.weight" : "attention.wv.weight");
    case TensorRole::kWo:
      return prefix + (hf ? "self_attn.o_proj.weight" : "attention.wo.weight");
    case TensorRole::kMlpNorm:
      return prefix + (hf ? "post_attention_layernorm.weight" : "ffn_norm.weight");
    case TensorRole::kWGate:
      return prefix + (hf ? "mlp.gate_proj.weight" : "feed_forward.w1.weight");
    case TensorRole::kWUp:
      return prefix + (hf ? "mlp.up_proj.weight" : "feed_forward.w3.weight");
    case TensorRole::kWDown:
      return prefix + (hf ? "mlp.down_proj.weight" : "feed_forward.w2.weight");
  }
  MISTRAL_CHECK(false) << "unknown tensor role";
  return {};
}

bool is_ignorable_tensor_name(const std::string& name) {
  const std::string suffix = "rotary_emb.inv_freq";
  return name.size() >= suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

namespace {

// Within one head, native row 2*i+p (pair i, member p) is Hugging Face row p*half + i.
void permute_rows(const void* src, void* dst, int64_t n_heads, int64_t head_dim, int64_t cols,
                  size_t elem_size, bool native_to_hf) {
  const int64_t half = head_dim / 2;
  const size_t row_bytes = static_cast<size_t>(cols) * elem_size;
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  for (int64_t h = 0; h < n_heads; ++h) {
    const int64_t base = h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t p = 0; p < 2; ++p) {
        const int64_t native_row = base + 2 * i + p;
        const int64_t hf_row = base + p * half + i;
        const int64_t from = native_to_hf ? native_row : hf_row;
        const int64_t to = native_to_hf ? hf_row : native_row;
        std::memcpy(d + to * row_bytes, s + from * row_bytes, row_bytes);
      }
    }
  }
}

}  // namespace

void permute_rotary_rows_native_to_hf(const void* src, void* dst, int64_t n_heads, int64_t head_dim,
                                      int64_t cols, size_t elem_size) {
  permute_rows(src, dst, n_heads, head_dim, cols, elem_size, true);
}

void permute_rotary_rows_hf_to_native(const void* src, void* dst, int64_t n_heads, int64_t head_dim,
                                      int64_t cols, size_t elem_size) {
  permute_rows(src, dst, n_heads, head_dim, cols, elem_size, false);
}

}  // namespace mistral
