#include "model/checkpoint_writer.h"

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/quant.h"
#include "core/thread_pool.h"
#include "io/safetensors_writer.h"
#include "model/loader.h"

namespace mistral {
namespace {

Status write_config(const ModelConfig& config, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return error(dir + ": cannot create directory: " + ec.message());
  return write_file_atomic((std::filesystem::path(dir) / "config.json").string(),
                           to_hf_config_json(config).dump(2) + "\n");
}

// Counter-based generator: the value at (stream, index) does not depend on how work is split.
uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Fills n values of N(0, stddev^2) in `dtype`, pairs drawn by Box-Muller from the counter RNG.
void fill_normal(uint8_t* dst, DType dtype, uint64_t n, uint64_t stream, float stddev) {
  constexpr uint64_t kChunk = 1 << 16;
  const uint64_t chunks = (n + kChunk - 1) / kChunk;
  ThreadPool::global().parallel_for(chunks, 1, [&](size_t c0, size_t c1) {
    for (uint64_t c = c0; c < c1; ++c) {
      const uint64_t begin = c * kChunk, end = std::min(n, begin + kChunk);
      for (uint64_t i = begin; i < end; i += 2) {
        const uint64_t r = splitmix64(stream ^ splitmix64(i));
        const float u1 = (static_cast<float>(r >> 40) + 1.0f) * (1.0f / 16777216.0f);
        const float u2 = static_cast<float>((r >> 16) & 0xffffff) * (1.0f / 16777216.0f);
        const float radius = stddev * std::sqrt(-2.0f * std::log(u1));
        const float values[2] = {radius * std::cos(6.2831853f * u2),
                                 radius * std::sin(6.2831853f * u2)};
        for (uint64_t j = i; j < std::min(end, i + 2); ++j) {
          store_float(dst, dtype, j, values[j - i]);
        }
      }
    }
  });
}

void fill_ones(uint8_t* dst, DType dtype, uint64_t n) {
  for (uint64_t j = 0; j < n; ++j) store_float(dst, dtype, j, 1.0f);
}

}  // namespace

Status save_checkpoint(const ModelConfig& config, ModelWeights& weights, const std::string& dir,
                       const SaveOptions& options) {
  bool on_device = false;
  weights.for_each_tensor(config,
                          [&](TensorRole, int64_t, Tensor& t) { on_device |= t.on_device; });
  if (on_device) {
    return error("save to " + dir +
                 ": the weights live in a GPU's memory; load the model on the cpu to save it");
  }
  ModelConfig out_config = config;
  out_config.dtype = options.dtype.value_or(config.dtype);
  out_config.quantization = QuantType::kNone;  // set below if the matrices are quantized
  std::vector<TensorToWrite> tensors;
  std::vector<Tensor> converted;  // keeps conversions alive until written
  weights.for_each_tensor(config, [&](TensorRole role, int64_t layer, Tensor& t) {
    TensorToWrite w;
    w.name = tensor_name(role, layer, CheckpointLayout::kHuggingFace);
    if (t.quantized()) {  // values and scales as they are; the config records the scheme
      out_config.quantization = t.quant;
      if (t.layout != QuantLayout::kRows) {  // the CPU backend's tiles: back to the file's rows
        converted.push_back(unpack_int4_tiles(t));
      }
      const Tensor& q = t.layout != QuantLayout::kRows ? converted.back() : t;
      w.dtype = q.dtype;
      w.shape = quantized_value_shape(q.quant, q.shape);
      w.data = q.data;
      TensorToWrite scales;
      scales.name = quant_scale_name(w.name);
      scales.dtype = DType::kF16;
      scales.shape = quantized_scale_shape(t.shape);
      scales.data = q.scales;
      tensors.push_back(std::move(w));
      tensors.push_back(std::move(scales));
      return;
    }
    converted.push_back(convert_tensor(t, out_config.dtype));
    w.dtype = out_config.dtype;
    w.shape = t.shape;
    w.data = converted.back().data;
    tensors.push_back(std::move(w));
  });
  // Tensors first: the config only describes them once they are in place.
  MISTRAL_RETURN_IF_ERROR(
      write_checkpoint_tensors(dir, tensors, options.max_shard_bytes, {{"format", "pt"}}));
  return write_config(out_config, dir);
}

Status write_random_checkpoint(const ModelConfig& config, const std::string& dir, DType dtype,
                               uint64_t seed, float stddev, uint64_t max_shard_bytes) {
  MISTRAL_RETURN_IF_ERROR(validate_config(config, "random checkpoint config"));
  ModelConfig out_config = config;
  out_config.dtype = dtype;
  ModelWeights shapes;  // only used to enumerate roles; tensors stay empty
  shapes.layers.resize(config.num_hidden_layers);
  std::vector<TensorToWrite> tensors;
  uint64_t index = 0;
  shapes.for_each_tensor(config, [&](TensorRole role, int64_t layer, Tensor&) {
    TensorToWrite w;
    w.name = tensor_name(role, layer, CheckpointLayout::kHuggingFace);
    w.dtype = dtype;
    w.shape = expected_shape(config, role);
    const uint64_t n = w.num_bytes() / dtype_size(dtype);
    const uint64_t stream = splitmix64(seed) ^ splitmix64(++index * 0x632be59bd9b4e019ull);
    if (is_norm_role(role)) {
      w.fill = [n, dtype](uint8_t* dst) { fill_ones(dst, dtype, n); };
    } else {
      w.fill = [n, dtype, stream, stddev](uint8_t* dst) {
        fill_normal(dst, dtype, n, stream, stddev);
      };
    }
    tensors.push_back(std::move(w));
  });
  MISTRAL_RETURN_IF_ERROR(
      write_checkpoint_tensors(dir, tensors, max_shard_bytes, {{"format", "pt"}}));
  return write_config(out_config, dir);
}

}  // namespace mistral
