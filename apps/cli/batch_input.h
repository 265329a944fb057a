// Reading the {"input_ids": [[...]], "attention_mask": [[...]]} files that the CLI takes (the
// output of a Hugging Face tokenizer with padding), and setting up the model the commands share.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/status.h"
#include "model/model.h"

namespace mistral::cli {

struct BatchInput {
  int64_t batch = 0;
  int64_t seq = 0;
  std::vector<int32_t> input_ids;       // [batch, seq]
  std::vector<uint8_t> attention_mask;  // [batch, seq]; all ones when the file has no mask

  // The real tokens of row b (mask == 1), in order.
  std::vector<int32_t> row_tokens(int64_t b) const;
};

// Errors name the file and the offending field / element.
Result<BatchInput> read_batch_input(const std::string& path);

// Options shared by commands that load a model.
struct ModelOptions {
  std::string model_dir;
  std::string dtype;           // "" = as stored
  std::string weights;         // "" = as stored; "int8" / "int4" quantize the matrices at load
  int threads = 0;             // 0 = all cores
  std::string device = "cpu";  // "cpu", "cuda", "cuda:N"
};
void add_model_options(CLI::App& cmd, ModelOptions& options);
Result<std::unique_ptr<Model>> load_model_from_options(const ModelOptions& options);

// `--kv-cache f32|bf16|f16|int8` (default: the backend's, f32 on the cpu, bf16 on cuda), for the
// commands that generate: the KV cache's storage type, and `--kv-block-size N` (positions per
// block of its paged memory, at least 1; left at 0, the default). kv_cache_dtype_from_option
// fails with a message naming the option.
void add_kv_cache_option(CLI::App& cmd, std::string& kv_cache, int64_t& kv_block_size);
// Empty: nullopt (the backend's default).
Result<std::optional<DType>> kv_cache_dtype_from_option(const std::string& kv_cache);

}  // namespace mistral::cli
