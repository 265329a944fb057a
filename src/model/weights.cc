#include "model/weights.h"

namespace mistral {

std::vector<int64_t> expected_shape(const ModelConfig& c, TensorRole role) {
  switch (role) {
    case TensorRole::kEmbedding:
    case TensorRole::kLmHead:
      return {c.vocab_size, c.hidden_size};
    case TensorRole::kFinalNorm:
    case TensorRole::kAttnNorm:
    case TensorRole::kMlpNorm:
      return {c.hidden_size};
    case TensorRole::kWq:
      return {c.q_dim(), c.hidden_size};
    case TensorRole::kWk:
    case TensorRole::kWv:
      return {c.kv_dim(), c.hidden_size};
    case TensorRole::kWo:
      return {c.hidden_size, c.q_dim()};
    case TensorRole::kWGate:
    case TensorRole::kWUp:
      return {c.intermediate_size, c.hidden_size};
    case TensorRole::kWDown:
      return {c.hidden_size, c.intermediate_size};
  }
  return {};
}

bool is_norm_role(TensorRole role) {
  return role == TensorRole::kFinalNorm || role == TensorRole::kAttnNorm ||
         role == TensorRole::kMlpNorm;
}

}  // namespace mistral
