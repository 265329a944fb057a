#include "model/config.h"

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/quant.h"
#include "io/strict_json.h"

namespace mistral {
namespace {

using nlohmann::json;

constexpr const char* kQuantMethod = "mistral_cpp";

// Reads integer field `key`; absent -> fallback (if given) or an error naming the field.
Result<int64_t> get_int(const json& j, const char* key, const std::string& source,
                        std::optional<int64_t> fallback = std::nullopt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback) return *fallback;
    return error(source + ": missing required field \"" + key + "\"");
  }
  if (it->is_number_integer() || it->is_number_unsigned()) {
    if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return error(source + ": field \"" + key + "\" is out of range");
    }
    return it->get<int64_t>();
  }
  if (it->is_number_float()) {
    const double d = it->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) {
      return static_cast<int64_t>(d);
    }
  }
  return error(source + ": field \"" + key + "\" must be an integer, got " + it->dump());
}

Result<double> get_double(const json& j, const char* key, const std::string& source,
                          std::optional<double> fallback = std::nullopt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback) return *fallback;
    return error(source + ": missing required field \"" + key + "\"");
  }
  if (!it->is_number()) {
    return error(source + ": field \"" + key + "\" must be a number, got " + it->dump());
  }
  const double d = it->get<double>();
  if (!std::isfinite(d)) return error(source + ": field \"" + key + "\" is not finite");
  return d;
}

Result<std::optional<int64_t>> get_optional_int(const json& j, const char* key,
                                                const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::optional<int64_t>();
  MISTRAL_ASSIGN_OR_RETURN(int64_t v, get_int(j, key, source));
  return std::optional<int64_t>(v);
}

// eos_token_id may be an int, a list of ints, or null.
Result<std::vector<int64_t>> get_id_list(const json& j, const char* key,
                                         const std::string& source) {
  std::vector<int64_t> ids;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return ids;
  if (it->is_array()) {
    for (size_t i = 0; i < it->size(); ++i) {
      const std::string element = std::string(key) + "[" + std::to_string(i) + "]";
      MISTRAL_ASSIGN_OR_RETURN(int64_t id,
                               get_int(json{{element, (*it)[i]}}, element.c_str(), source));
      ids.push_back(id);
    }
    return ids;
  }
  MISTRAL_ASSIGN_OR_RETURN(int64_t v, get_int(j, key, source));
  ids.push_back(v);
  return ids;
}

Result<QuantType> get_quantization(const json& j, const std::string& source) {
  auto it = j.find("quantization_config");
  if (it == j.end() || it->is_null()) return QuantType::kNone;
  const std::string where = source + ": \"quantization_config\"";
  if (!it->is_object()) return error(where + " must be an object");
  const json& q = *it;
  const auto method = q.find("quant_method");
  if (method == q.end() || !method->is_string()) {
    return error(where + " has no string \"quant_method\"");
  }
  if (*method != kQuantMethod) {
    return error(where + ": quant_method \"" + method->get<std::string>() +
                 "\" is not supported (this engine reads the int8/int4 checkpoints that `mistral "
                 "quantize` writes, quant_method \"" +
                 kQuantMethod + "\"; quantize a bf16/f16/f32 checkpoint with it)");
  }
  const auto weights = q.find("weights");
  std::optional<QuantType> type;
  if (weights != q.end() && weights->is_string())
    type = parse_quant_type(weights->get<std::string>());
  if (!type || *type == QuantType::kNone) {
    return error(where + ": \"weights\" must be \"int8\" or \"int4\"");
  }
  const auto group = q.find("group_size");
  if (group == q.end() || !group->is_number_integer() || group->get<int64_t>() != kQuantGroupSize) {
    return error(where + ": \"group_size\" must be " + std::to_string(kQuantGroupSize));
  }
  return *type;
}

Result<DType> get_dtype(const json& j, const std::string& source) {
  for (const char* key : {"dtype", "torch_dtype"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_string()) return error(source + ": field \"" + key + "\" must be a string");
    auto d = parse_float_dtype(it->get<std::string>());
    if (!d) {
      return error(source + ": field \"" + key + "\" = \"" + it->get<std::string>() +
                   "\" is not one of float32, bfloat16, float16");
    }
    return *d;
  }
  return DType::kBF16;  // what published Mistral checkpoints hold
}

// rope_theta sits at the top level on hub checkpoints and inside rope_parameters (transformers 5)
// or rope_scaling; only the default (unscaled) rotary embedding is Mistral's.
Result<double> get_rope_theta(const json& j, const std::string& source) {
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_object()) return error(source + ": field \"" + key + "\" must be an object");
    auto type = it->find("rope_type");
    if (type == it->end()) type = it->find("type");
    if (type != it->end() && !(type->is_string() && type->get<std::string>() == "default")) {
      return error(source + ": " + key + ".rope_type " + type->dump() +
                   " is not supported (only \"default\" rotary embeddings)");
    }
    if (it->contains("rope_theta")) {
      return get_double(*it, "rope_theta", source + ": " + key);
    }
  }
  return get_double(j, "rope_theta", source, 10000.0);
}

}  // namespace

uint64_t ModelConfig::num_parameters() const {
  const uint64_t h = hidden_size;
  const uint64_t per_layer = h * q_dim() + 2 * h * kv_dim() + q_dim() * h +
                             3 * h * static_cast<uint64_t>(intermediate_size) + 2 * h;
  const uint64_t embed = static_cast<uint64_t>(vocab_size) * h;
  return embed * (tie_word_embeddings ? 1 : 2) + per_layer * num_hidden_layers + h;
}

Result<ModelConfig> parse_hf_config(const json& j, const std::string& source) {
  if (!j.is_object()) return error(source + ": expected a JSON object at the top level");
  if (auto mt = j.find("model_type"); mt != j.end() && !mt->is_null()) {
    if (!mt->is_string()) return error(source + ": field \"model_type\" must be a string");
    const std::string t = mt->get<std::string>();
    if (t != "mistral") {
      return error(source + ": model_type \"" + t +
                   "\" is not supported (expected \"mistral\", MistralForCausalLM)");
    }
  }
  ModelConfig c;
  MISTRAL_ASSIGN_OR_RETURN(c.vocab_size, get_int(j, "vocab_size", source));
  MISTRAL_ASSIGN_OR_RETURN(c.hidden_size, get_int(j, "hidden_size", source));
  MISTRAL_ASSIGN_OR_RETURN(c.intermediate_size, get_int(j, "intermediate_size", source));
  MISTRAL_ASSIGN_OR_RETURN(c.num_hidden_layers, get_int(j, "num_hidden_layers", source));
  MISTRAL_ASSIGN_OR_RETURN(c.num_attention_heads, get_int(j, "num_attention_heads", source));
  MISTRAL_ASSIGN_OR_RETURN(c.num_key_value_heads,
                           get_int(j, "num_key_value_heads", source, c.num_attention_heads));
  if (c.num_attention_heads <= 0) {
    return error(source + ": field \"num_attention_heads\" must be positive");
  }
  MISTRAL_ASSIGN_OR_RETURN(c.head_dim,
                           get_int(j, "head_dim", source, c.hidden_size / c.num_attention_heads));
  MISTRAL_ASSIGN_OR_RETURN(c.max_position_embeddings,
                           get_int(j, "max_position_embeddings", source, 32768));
  MISTRAL_ASSIGN_OR_RETURN(c.rms_norm_eps, get_double(j, "rms_norm_eps", source, 1e-6));
  MISTRAL_ASSIGN_OR_RETURN(c.rope_theta, get_rope_theta(j, source));
  MISTRAL_ASSIGN_OR_RETURN(c.sliding_window, get_optional_int(j, "sliding_window", source));
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean())
      return error(source + ": field \"tie_word_embeddings\" must be a boolean");
    c.tie_word_embeddings = it->get<bool>();
  }
  MISTRAL_ASSIGN_OR_RETURN(c.bos_token_id, get_optional_int(j, "bos_token_id", source));
  MISTRAL_ASSIGN_OR_RETURN(c.eos_token_ids, get_id_list(j, "eos_token_id", source));
  MISTRAL_ASSIGN_OR_RETURN(c.pad_token_id, get_optional_int(j, "pad_token_id", source));
  if (auto it = j.find("hidden_act"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) return error(source + ": field \"hidden_act\" must be a string");
    c.hidden_act = it->get<std::string>();
  }
  MISTRAL_ASSIGN_OR_RETURN(c.dtype, get_dtype(j, source));
  MISTRAL_ASSIGN_OR_RETURN(c.quantization, get_quantization(j, source));
  MISTRAL_RETURN_IF_ERROR(validate_config(c, source));
  return c;
}

Result<ModelConfig> parse_mistral_params(const json& j, const std::string& source) {
  if (!j.is_object()) return error(source + ": expected a JSON object at the top level");
  if (j.contains("moe")) return error(source + ": mixture-of-experts (\"moe\") is not supported");
  if (j.contains("vision_encoder") && !j["vision_encoder"].is_null()) {
    return error(source + ": \"vision_encoder\" models are not supported");
  }
  ModelConfig c;
  MISTRAL_ASSIGN_OR_RETURN(c.hidden_size, get_int(j, "dim", source));
  MISTRAL_ASSIGN_OR_RETURN(c.num_hidden_layers, get_int(j, "n_layers", source));
  MISTRAL_ASSIGN_OR_RETURN(c.num_attention_heads, get_int(j, "n_heads", source));
  if (c.num_attention_heads <= 0) return error(source + ": field \"n_heads\" must be positive");
  MISTRAL_ASSIGN_OR_RETURN(c.num_key_value_heads,
                           get_int(j, "n_kv_heads", source, c.num_attention_heads));
  MISTRAL_ASSIGN_OR_RETURN(c.head_dim,
                           get_int(j, "head_dim", source, c.hidden_size / c.num_attention_heads));
  MISTRAL_ASSIGN_OR_RETURN(c.intermediate_size, get_int(j, "hidden_dim", source));
  MISTRAL_ASSIGN_OR_RETURN(c.vocab_size, get_int(j, "vocab_size", source));
  MISTRAL_ASSIGN_OR_RETURN(c.rms_norm_eps, get_double(j, "norm_eps", source));
  MISTRAL_ASSIGN_OR_RETURN(c.rope_theta, get_double(j, "rope_theta", source, 10000.0));
  MISTRAL_ASSIGN_OR_RETURN(c.sliding_window, get_optional_int(j, "sliding_window", source));
  MISTRAL_ASSIGN_OR_RETURN(c.max_position_embeddings, get_int(j, "max_seq_len", source, 32768));
  c.tie_word_embeddings = false;
  c.bos_token_id = 1;  // Mistral's tokenizers: <s> = 1, </s> = 2
  c.eos_token_ids = {2};
  c.dtype = DType::kBF16;
  MISTRAL_RETURN_IF_ERROR(validate_config(c, source));
  return c;
}

Status validate_config(const ModelConfig& c, const std::string& source) {
  auto positive = [&](int64_t v, const char* name) -> Status {
    if (v <= 0)
      return error(source + ": field \"" + name + "\" must be positive, got " + std::to_string(v));
    return Status();
  };
  MISTRAL_RETURN_IF_ERROR(positive(c.vocab_size, "vocab_size"));
  MISTRAL_RETURN_IF_ERROR(positive(c.hidden_size, "hidden_size"));
  MISTRAL_RETURN_IF_ERROR(positive(c.intermediate_size, "intermediate_size"));
  MISTRAL_RETURN_IF_ERROR(positive(c.num_hidden_layers, "num_hidden_layers"));
  MISTRAL_RETURN_IF_ERROR(positive(c.num_attention_heads, "num_attention_heads"));
  MISTRAL_RETURN_IF_ERROR(positive(c.num_key_value_heads, "num_key_value_heads"));
  MISTRAL_RETURN_IF_ERROR(positive(c.head_dim, "head_dim"));
  MISTRAL_RETURN_IF_ERROR(positive(c.max_position_embeddings, "max_position_embeddings"));
  // Bounds that keep every product of dimensions far from overflow.
  constexpr int64_t kMaxDim = int64_t{1} << 20;
  for (auto [v, name] : {std::pair{c.vocab_size, "vocab_size"},
                         {c.hidden_size, "hidden_size"},
                         {c.intermediate_size, "intermediate_size"},
                         {c.head_dim, "head_dim"},
                         {c.num_attention_heads, "num_attention_heads"},
                         {c.num_hidden_layers, "num_hidden_layers"}}) {
    if (v > kMaxDim) {
      return error(source + ": field \"" + name + "\" = " + std::to_string(v) + " exceeds " +
                   std::to_string(kMaxDim));
    }
  }
  if (c.quantization != QuantType::kNone) {
    for (auto [v, name] :
         {std::pair{c.hidden_size, "hidden_size"},
          {c.intermediate_size, "intermediate_size"},
          {c.num_attention_heads * c.head_dim, "num_attention_heads * head_dim"}}) {
      if (v % kQuantGroupSize != 0) {
        return error(source + ": " + name + " = " + std::to_string(v) +
                     " is not a multiple of the quantization group size " +
                     std::to_string(kQuantGroupSize));
      }
    }
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return error(source + ": num_attention_heads (" + std::to_string(c.num_attention_heads) +
                 ") must be a multiple of num_key_value_heads (" +
                 std::to_string(c.num_key_value_heads) + ")");
  }
  if (c.head_dim % 2 != 0) {
    return error(source + ": head_dim (" + std::to_string(c.head_dim) +
                 ") must be even for rotary embeddings");
  }
  if (c.max_position_embeddings > kMaxPositionEmbeddingsLimit) {
    return error(source +
                 ": max_position_embeddings = " + std::to_string(c.max_position_embeddings) +
                 " is absurd (limit " + std::to_string(kMaxPositionEmbeddingsLimit) + ")");
  }
  if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps)) {
    return error(source + ": rms_norm_eps must be a positive finite number");
  }
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta)) {
    return error(source + ": rope_theta must be a positive finite number");
  }
  if (c.sliding_window && *c.sliding_window <= 0) {
    return error(source + ": sliding_window must be positive or null, got " +
                 std::to_string(*c.sliding_window));
  }
  if (c.hidden_act != "silu") {
    return error(source + ": hidden_act \"" + c.hidden_act +
                 "\" is not supported (Mistral uses \"silu\")");
  }
  auto check_id = [&](std::optional<int64_t> id, const char* name) -> Status {
    if (id && (*id < 0 || *id >= c.vocab_size)) {
      return error(source + ": " + name + " = " + std::to_string(*id) +
                   " is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
    }
    return Status();
  };
  MISTRAL_RETURN_IF_ERROR(check_id(c.bos_token_id, "bos_token_id"));
  MISTRAL_RETURN_IF_ERROR(check_id(c.pad_token_id, "pad_token_id"));
  for (int64_t id : c.eos_token_ids) MISTRAL_RETURN_IF_ERROR(check_id(id, "eos_token_id"));
  return Status();
}

Result<ModelConfig> load_config_file(const std::string& path) {
  MISTRAL_ASSIGN_OR_RETURN(std::string text, read_file(path, kMaxJsonFileBytes));
  Result<json> parsed = io_internal::parse_json_strict(text);
  if (!parsed.ok()) return parsed.status().with_context(path);
  const json& j = *parsed;
  const bool native = std::filesystem::path(path).filename() == "params.json";
  return native ? parse_mistral_params(j, path) : parse_hf_config(j, path);
}

json to_hf_config_json(const ModelConfig& c) {
  json j;
  j["architectures"] = {"MistralForCausalLM"};
  j["model_type"] = "mistral";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["sliding_window"] = c.sliding_window ? json(*c.sliding_window) : json(nullptr);
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["hidden_act"] = c.hidden_act;
  j["attention_dropout"] = 0.0;
  j["initializer_range"] = 0.02;
  j["use_cache"] = true;
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  if (c.pad_token_id) j["pad_token_id"] = *c.pad_token_id;
  const char* dtype = c.dtype == DType::kF32   ? "float32"
                      : c.dtype == DType::kF16 ? "float16"
                                               : "bfloat16";
  j["torch_dtype"] = dtype;
  j["dtype"] = dtype;
  if (c.quantization != QuantType::kNone) {
    j["quantization_config"] = {{"quant_method", kQuantMethod},
                                {"weights", std::string(quant_type_name(c.quantization))},
                                {"group_size", kQuantGroupSize}};
  }
  return j;
}

Result<ModelConfig> preset_config(const std::string& name) {
  ModelConfig c;
  if (name == "7b") {  // Mistral-7B-v0.1
    c.vocab_size = 32000;
    c.hidden_size = 4096;
    c.intermediate_size = 14336;
    c.num_hidden_layers = 32;
    c.num_attention_heads = 32;
    c.num_key_value_heads = 8;
    c.head_dim = 128;
    c.max_position_embeddings = 32768;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 10000.0;
    c.sliding_window = 4096;
  } else if (name == "tiny") {  // a few MB, for the README's first run and quick tests
    c.vocab_size = 32000;
    c.hidden_size = 128;
    c.intermediate_size = 384;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 8;
    c.num_key_value_heads = 2;
    c.head_dim = 16;
    c.max_position_embeddings = 4096;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 1e6;
    c.sliding_window = std::nullopt;
  } else {
    return error("--preset: unknown preset \"" + name + "\" (known: 7b, tiny)");
  }
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.dtype = DType::kBF16;
  return c;
}

}  // namespace mistral
