#include "model/loader.h"

#include <cstring>
#include <filesystem>
#include <set>

#include "core/quant.h"
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

// A quantized matrix: values (I8 or packed U8) under `name` and F16 scales under name + "_scale".
Result<Tensor> take_quantized(const WeightSource& source,
                              const std::shared_ptr<WeightSource>& owner, const std::string& name,
                              QuantType type, const std::vector<int64_t>& shape,
                              std::set<std::string>* used) {
  const std::string scale_name = quant_scale_name(name);
  const TensorView* values = source.find(name);
  const TensorView* scales = source.find(scale_name);
  for (auto [view, n] : {std::pair{values, &name}, {scales, &scale_name}}) {
    if (view == nullptr) return error(source.description() + ": missing tensor \"" + *n + "\"");
    used->insert(*n);
  }
  struct Part {
    const TensorView* view;
    const std::string& name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  for (const Part& p :
       {Part{values, name, quantized_value_dtype(type), quantized_value_shape(type, shape)},
        Part{scales, scale_name, DType::kF16, quantized_scale_shape(shape)}}) {
    if (p.view->info->dtype != p.dtype || p.view->info->shape != p.shape) {
      return error(*p.view->file + ": tensor \"" + p.name + "\" is " +
                   std::string(dtype_name(p.view->info->dtype)) + " " +
                   shape_to_string(p.view->info->shape) + "; a " +
                   std::string(quant_type_name(type)) + " checkpoint needs " +
                   std::string(dtype_name(p.dtype)) + " " + shape_to_string(p.shape));
    }
  }
  return make_quantized_view(type, shape, values->data, scales->data, owner);
}

Status check_quantize_options(const ModelConfig& config, const LoadOptions& options,
                              const Backend& backend, const std::string& dir) {
  if (config.quantization != QuantType::kNone) {
    if (options.quantize != QuantType::kNone && options.quantize != config.quantization) {
      return error(dir + " is already quantized to " +
                   std::string(quant_type_name(config.quantization)) + "; quantizing to " +
                   std::string(quant_type_name(options.quantize)) +
                   " needs a dense (f32/bf16/f16) checkpoint");
    }
    if (options.dtype) {
      return error(dir + " is quantized to " + std::string(quant_type_name(config.quantization)) +
                   "; a weight dtype cannot be chosen for it");
    }
  }
  const QuantType wanted =
      options.quantize != QuantType::kNone ? options.quantize : config.quantization;
  if (wanted != QuantType::kNone && !backend.supports_quantization(wanted)) {
    return error("the " + backend.name() + " backend does not run " +
                 std::string(quant_type_name(wanted)) + " weights");
  }
  return Status();
}

}  // namespace

std::string quant_scale_name(const std::string& name) { return name + "_scale"; }

Result<std::unique_ptr<Model>> load_model(const std::string& dir, std::unique_ptr<Backend> backend,
                                          const LoadOptions& options) {
  MISTRAL_ASSIGN_OR_RETURN(CheckpointFiles files, detect_checkpoint(dir));
  MISTRAL_ASSIGN_OR_RETURN(ModelConfig config, load_config_file(files.config_path));
  MISTRAL_RETURN_IF_ERROR(check_quantize_options(config, options, *backend, dir));
  MISTRAL_ASSIGN_OR_RETURN(WeightSource opened, open_weights(dir, files.layout));
  auto source = std::make_shared<WeightSource>(std::move(opened));

  ModelWeights weights;
  weights.layers.resize(config.num_hidden_layers);
  std::set<std::string> used;
  Status status;
  weights.for_each_tensor(config, [&](TensorRole role, int64_t layer, Tensor& slot) {
    if (!status.ok()) return;
    const std::string name = tensor_name(role, layer, files.layout);
    if (config.quantization != QuantType::kNone && !is_norm_role(role)) {
      Result<Tensor> q = take_quantized(*source, source, name, config.quantization,
                                        expected_shape(config, role), &used);
      if (q.ok()) slot = std::move(q).value();
      status = q.status();
      return;
    }
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
    if (options.quantize != QuantType::kNone && !is_norm_role(role)) {
      Result<Tensor> q = quantize_matrix(tensor, options.quantize);
      if (!q.ok()) {
        status = error(*view->file + ": tensor \"" + name + "\": " + q.status().message());
        return;
      }
      slot = std::move(q).value();
      release_mapped_range(view->data, view->info->num_bytes());  // read once, not needed again
      return;
    }
    DType target = options.dtype.value_or(tensor.dtype);
    if (is_norm_role(role)) target = DType::kF32;
    if (!is_norm_role(role) && !backend->supports_weight_dtype(target)) {
      target = backend->preferred_weight_dtype();
    }
    slot = convert_tensor(tensor, target);
    if (options.quantize != QuantType::kNone && slot.data == view->data) {
      // A norm used in place from the mapping (F32 on disk) would keep the whole dense checkpoint
      // mapped, and prefaulted below, once every matrix is quantized: own its few KB instead.
      Tensor owned = Tensor::allocate(slot.dtype, slot.shape);
      std::memcpy(owned.mutable_data(), slot.data, slot.num_bytes());
      slot = std::move(owned);
    }
  });
  MISTRAL_RETURN_IF_ERROR(status);
  if (options.quantize != QuantType::kNone) config.quantization = options.quantize;
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
  // Weights move to a device backend's memory here (a host backend keeps most as they are); the
  // mapped pages of those copied elsewhere are dropped one by one, so that resident memory never
  // holds both forms of the weights.
  MISTRAL_RETURN_IF_ERROR(place_weights(config, weights, *backend, [&](const Tensor& t) {
    if (source->maps(t.data)) release_mapped_range(t.data, t.value_bytes());
    if (t.scales != nullptr && source->maps(t.scales)) {
      release_mapped_range(t.scales, t.scale_bytes());
    }
  }));
  // The first request must not pay for page faults: map the pages that the placed weights read
  // from the checkpoint now. A source whose every tensor was converted, quantized or uploaded is
  // no longer referenced and is unmapped when `source` goes.
  if (source.use_count() > 1) {
    auto prefault = [&](const Tensor& t) {
      if (t.on_device) return;
      if (source->maps(t.data)) prefault_mapped_range(t.data, t.value_bytes());
      if (t.scales != nullptr && source->maps(t.scales)) {
        prefault_mapped_range(t.scales, t.scale_bytes());
      }
    };
    weights.for_each_tensor(config, [&](TensorRole, int64_t, Tensor& t) { prefault(t); });
    if (config.tie_word_embeddings) prefault(weights.lm_head);
  }
  const bool warm_up = backend->wants_warm_up();
  auto model = std::make_unique<Model>(std::move(config), std::move(weights), std::move(backend));
  if (warm_up) MISTRAL_RETURN_IF_ERROR(model->warm_up());
  return model;
}

}  // namespace mistral
