#include "model/loader.h"

#include <filesystem>
#include <set>

#include "io/weight_source.h"

namespace mistral {
namespace fs = std::filesystem;

Result<CheckpointFiles> detect_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return error(dir + ": not a directory");
  CheckpointFiles files;
  if (fs::exists(fs::path(dir) / "config.json", ec)) {
    files.layout = CheckpointLayout::kHuggingFace;
    files.config_path = (fs::path(dir) / "config.json").string();
    return files;
  }
  if (fs::exists(fs::path(dir) / "params.json", ec)) {
    files.layout = CheckpointLayout::kMistralNative;
    files.config_path = (fs::path(dir) / "params.json").string();
    return files;
  }
  return error(dir + ": no checkpoint found (looked for config.json, then params.json)");
}

Result<ModelConfig> load_model_config(const std::string& dir) {
  MISTRAL_ASSIGN_OR_RETURN(CheckpointFiles files, detect_checkpoint(dir));
  return load_config_file(files.config_path);
}

namespace {

Result<WeightSource> open_weights(const std::string& dir, CheckpointLayout layout) {
  if (layout == CheckpointLayout::kHuggingFace) return WeightSource::open_hf_dir(dir);
  return WeightSource::open_file((fs::path(dir) / "consolidated.safetensors").string());
}

// Where the source's dtype is usable as is, the tensor is a view into the mapping.
Result<Tensor> take_tensor(const TensorView& view, const std::shared_ptr<WeightSource>& source,
                           const std::string& name, const std::vector<int64_t>& shape) {
  const TensorInfo& info = *view.info;
  if (info.dtype != DType::kF32 && info.dtype != DType::kBF16 && info.dtype != DType::kF16) {
    return error(*view.file + ": tensor \"" + name + "\" has dtype " +
                 std::string(dtype_name(info.dtype)) + "; expected F32, BF16 or F16");
  }
  if (info.shape != shape) {
    return error(*view.file + ": tensor \"" + name + "\" has shape " + shape_to_string(info.shape) +
                 ", the config implies " + shape_to_string(shape));
  }
  Tensor t;
  t.dtype = info.dtype;
  t.shape = info.shape;
  t.data = view.data;
  t.owner = source;
  return t;
}

}  // namespace

Result<std::unique_ptr<Model>> load_model(const std::string& dir, std::unique_ptr<Backend> backend,
                                          const LoadOptions& options) {
  MISTRAL_ASSIGN_OR_RETURN(CheckpointFiles files, detect_checkpoint(dir));
  MISTRAL_ASSIGN_OR_RETURN(ModelConfig config, load_config_file(files.config_path));
  MISTRAL_ASSIGN_OR_RETURN(WeightSource opened, open_weights(dir, files.layout));
  auto source = std::make_shared<WeightSource>(std::move(opened));

  ModelWeights weights;
  weights.layers.resize(config.num_hidden_layers);
  std::set<std::string> used;
  Status status;
  weights.for_each_tensor(config, [&](TensorRole role, int64_t layer, Tensor& slot) {
    if (!status.ok()) return;
    const std::string name = tensor_name(role, layer, files.layout);
    const TensorView* view = source->find(name);
    if (view == nullptr) {
      status = error(source->description() + ": missing tensor \"" + name + "\"");
      return;
    }
    used.insert(name);
    Result<Tensor> t = take_tensor(*view, source, name, expected_shape(config, role));
    if (!t.ok()) {
      status = t.status();
      return;
    }
    Tensor tensor = std::move(t).value();
    if (files.layout == CheckpointLayout::kMistralNative &&
        (role == TensorRole::kWq || role == TensorRole::kWk)) {
      const int64_t heads =
          role == TensorRole::kWq ? config.num_attention_heads : config.num_key_value_heads;
      Tensor permuted = Tensor::allocate(tensor.dtype, tensor.shape);
      permute_rotary_rows_native_to_hf(tensor.data, permuted.mutable_data(), heads, config.head_dim,
                                       tensor.shape[1], dtype_size(tensor.dtype));
      tensor = std::move(permuted);
    }
    DType target = options.dtype.value_or(tensor.dtype);
    if (is_norm_role(role)) target = DType::kF32;
    if (!is_norm_role(role) && !backend->supports_weight_dtype(target)) target = DType::kF32;
    slot = convert_tensor(tensor, target);
  });
  MISTRAL_RETURN_IF_ERROR(status);
  if (config.tie_word_embeddings) {
    weights.lm_head = weights.embedding;
    used.insert(tensor_name(TensorRole::kLmHead, -1, files.layout));  // ignored if present
  }
  for (const std::string& name : source->names()) {
    if (!used.count(name) && !is_ignorable_tensor_name(name)) {
      return error(source->description() + ": unexpected tensor \"" + name +
                   "\" (not part of a MistralForCausalLM with this config)");
    }
  }
  source->prefault();  // the first request must not pay for page faults
  return std::make_unique<Model>(std::move(config), std::move(weights), std::move(backend));
}

}  // namespace mistral
