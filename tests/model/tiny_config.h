// The small ModelConfig the model tests build random checkpoints from.
#pragma once

#include <cstdint>
#include <optional>

#include "model/config.h"

namespace mistral::testing {

inline ModelConfig tiny_config(std::optional<int64_t> sliding_window = std::nullopt) {
  ModelConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 256;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 1e4;
  c.sliding_window = sliding_window;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  return c;
}

}  // namespace mistral::testing
