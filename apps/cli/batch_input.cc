#include "apps/cli/batch_input.h"

#include <cstdint>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/quant.h"
#include "core/thread_pool.h"
#include "model/loader.h"

namespace mistral::cli {

std::vector<int32_t> BatchInput::row_tokens(int64_t b) const {
  std::vector<int32_t> out;
  for (int64_t t = 0; t < seq; ++t) {
    if (attention_mask[b * seq + t]) out.push_back(input_ids[b * seq + t]);
  }
  return out;
}

namespace {

// Reads a rectangular [rows][cols] integer matrix field.
Status read_matrix(const nlohmann::json& j, const char* field, const std::string& path,
                   int64_t* rows, int64_t* cols, std::vector<int64_t>* out) {
  auto it = j.find(field);
  if (it == j.end()) return error(path + ": missing field \"" + field + "\"");
  if (!it->is_array() || it->empty()) {
    return error(path + ": field \"" + field + "\" must be a non-empty list of lists");
  }
  *rows = static_cast<int64_t>(it->size());
  *cols = -1;
  for (size_t r = 0; r < it->size(); ++r) {
    const auto& row = (*it)[r];
    if (!row.is_array()) {
      return error(path + ": " + field + "[" + std::to_string(r) + "] must be a list");
    }
    if (*cols >= 0 && static_cast<int64_t>(row.size()) != *cols) {
      return error(path + ": " + field + "[" + std::to_string(r) + "] has " +
                   std::to_string(row.size()) + " entries, row 0 has " + std::to_string(*cols) +
                   " (pad the batch)");
    }
    *cols = static_cast<int64_t>(row.size());
    for (size_t c = 0; c < row.size(); ++c) {
      if (!row[c].is_number_integer()) {
        return error(path + ": " + field + "[" + std::to_string(r) + "][" + std::to_string(c) +
                     "] must be an integer, got " + row[c].dump());
      }
      out->push_back(row[c].get<int64_t>());
    }
  }
  if (*cols == 0) return error(path + ": field \"" + field + "\" has empty rows");
  return Status();
}

}  // namespace

Result<BatchInput> read_batch_input(const std::string& path) {
  MISTRAL_ASSIGN_OR_RETURN(std::string text, read_file(path, kMaxJsonFileBytes));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return error(path + ": not a JSON object");
  BatchInput input;
  std::vector<int64_t> ids, mask;
  MISTRAL_RETURN_IF_ERROR(read_matrix(j, "input_ids", path, &input.batch, &input.seq, &ids));
  if (j.contains("attention_mask")) {
    int64_t rows = 0, cols = 0;
    MISTRAL_RETURN_IF_ERROR(read_matrix(j, "attention_mask", path, &rows, &cols, &mask));
    if (rows != input.batch || cols != input.seq) {
      return error(path + ": attention_mask shape [" + std::to_string(rows) + ", " +
                   std::to_string(cols) + "] does not match input_ids [" +
                   std::to_string(input.batch) + ", " + std::to_string(input.seq) + "]");
    }
  } else {
    mask.assign(ids.size(), 1);
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string where =
        "[" + std::to_string(i / input.seq) + "][" + std::to_string(i % input.seq) + "]";
    if (ids[i] < 0 || ids[i] > INT32_MAX) {
      return error(path + ": input_ids" + where + " = " + std::to_string(ids[i]) +
                   " is not a valid token id");
    }
    if (mask[i] != 0 && mask[i] != 1) {
      return error(path + ": attention_mask" + where + " must be 0 or 1");
    }
    input.input_ids.push_back(static_cast<int32_t>(ids[i]));
    input.attention_mask.push_back(static_cast<uint8_t>(mask[i]));
  }
  return input;
}

void add_model_options(CLI::App& cmd, ModelOptions& options) {
  cmd.add_option("--model", options.model_dir, "checkpoint directory (Hugging Face or native)")
      ->required();
  cmd.add_option("--dtype", options.dtype,
                 "convert weights at load: f32, bf16 (default: as stored)");
  cmd.add_option("--weights", options.weights,
                 "quantize the weight matrices at load: int8 or int4 (default: as stored)");
  cmd.add_option("--threads", options.threads, "worker threads (default: all cores)")
      ->check(CLI::Range(0, 1024));
  cmd.add_option("--device", options.device, "cpu, cuda or cuda:N (default: cpu)");
}

Result<std::unique_ptr<Model>> load_model_from_options(const ModelOptions& options) {
  ThreadPool::set_default_threads(options.threads);
  LoadOptions load;
  if (!options.dtype.empty()) {
    auto d = parse_float_dtype(options.dtype);
    if (!d) return error("--dtype: \"" + options.dtype + "\" is not one of f32, bf16, f16");
    load.dtype = d;
  }
  if (!options.weights.empty()) {
    auto q = parse_quant_type(options.weights);
    if (!q || *q == QuantType::kNone) {
      return error("--weights: \"" + options.weights + "\" is not one of int8, int4");
    }
    load.quantize = *q;
  }
  MISTRAL_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, make_backend(options.device));
  return load_model(options.model_dir, std::move(backend), load);
}

void add_kv_cache_option(CLI::App& cmd, std::string& kv_cache, int64_t& kv_block_size) {
  cmd.add_option("--kv-cache", kv_cache,
                 "KV cache storage: f32, bf16, f16 (half the memory) or int8 (about a quarter); "
                 "default f32 on the cpu, bf16 on cuda");
  cmd.add_option("--kv-block-size", kv_block_size,
                 "positions per block of the KV cache's paged memory (default 16)")
      ->check(CLI::Range(int64_t{1}, int64_t{INT32_MAX}));
}

Result<std::optional<DType>> kv_cache_dtype_from_option(const std::string& kv_cache) {
  if (kv_cache.empty()) return std::optional<DType>();
  const std::optional<DType> dtype = parse_kv_cache_dtype(kv_cache);
  if (!dtype) return error("--kv-cache: \"" + kv_cache + "\" is not one of f32, bf16, f16, int8");
  return dtype;
}

}  // namespace mistral::cli
