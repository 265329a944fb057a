// ModelConfig: the hyper-parameters of a Mistral-family decoder, read from a Hugging Face
// `config.json` (MistralForCausalLM) or from Mistral's native `params.json`, validated so that
// every later shape computation is safe. Plain value type.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/dtype.h"
#include "core/status.h"
#include "core/tensor.h"

namespace mistral {

struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // explicit in config.json, or hidden_size / num_attention_heads
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<int64_t> sliding_window;  // nullopt: full attention
  bool tie_word_embeddings = false;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // config.json allows an int or a list
  std::optional<int64_t> pad_token_id;
  std::string hidden_act = "silu";
  DType dtype = DType::kBF16;  // `dtype` (transformers >= 4.56) or `torch_dtype`
  // Weight-only quantization of the matrices on disk, from config.json's "quantization_config"
  // {"quant_method": "mistral_cpp", "weights": "int8" | "int4", "group_size": 32}, which
  // `mistral quantize` writes; any other quant_method is refused.
  QuantType quantization = QuantType::kNone;

  int64_t q_dim() const { return num_attention_heads * head_dim; }
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  // Number of parameters, counting a tied lm_head once.
  uint64_t num_parameters() const;
};

// Largest max_position_embeddings accepted (Mistral-NeMo declares 1,024,000).
inline constexpr int64_t kMaxPositionEmbeddingsLimit = int64_t{1} << 24;

// Parses a Hugging Face config.json object; `source` names the file in error messages.
Result<ModelConfig> parse_hf_config(const nlohmann::json& j, const std::string& source);
// Parses Mistral's native params.json (dim, n_layers, head_dim, hidden_dim, n_heads, n_kv_heads,
// norm_eps, vocab_size, rope_theta, sliding_window, ...).
Result<ModelConfig> parse_mistral_params(const nlohmann::json& j, const std::string& source);
// Reads and parses a config.json or params.json file (chosen by file name).
Result<ModelConfig> load_config_file(const std::string& path);
// Checks the relations between fields (divisibility, ranges, token ids < vocab).
Status validate_config(const ModelConfig& c, const std::string& source);
// The config.json that save_pretrained would write for this config (transformers 4.x/5.x keys).
nlohmann::json to_hf_config_json(const ModelConfig& c);

// Presets for random checkpoints and benchmarks: "7b" (Mistral-7B-v0.1 shape), "tiny".
Result<ModelConfig> preset_config(const std::string& name);

}  // namespace mistral
