// Loading a model from a checkpoint directory: Hugging Face layout (config.json +
// model.safetensors or a sharded index) or Mistral's native layout (params.json +
// consolidated.safetensors). Weights are memory-mapped and used in place where the backend
// computes with their on-disk dtype; otherwise they are converted once at load.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "backend/backend.h"
#include "core/status.h"
#include "io/tensor_names.h"
#include "model/model.h"

namespace mistral {

struct LoadOptions {
  // Convert weight matrices to this dtype at load (default: keep the checkpoint's, widening F16
  // to F32 on backends without F16 kernels).
  std::optional<DType> dtype;
  // Quantize every weight matrix (embedding and lm_head included; norms stay F32) at load. A
  // checkpoint that is already quantized loads as it is when this matches, and is refused when it
  // asks for a different quantization.
  QuantType quantize = QuantType::kNone;
};

// The name of the F16 scales stored next to quantized values `name` ("...weight_scale").
std::string quant_scale_name(const std::string& name);

struct CheckpointFiles {
  CheckpointLayout layout = CheckpointLayout::kHuggingFace;
  std::string config_path;
};

// Finds which layout `dir` holds; an error lists what was looked for.
Result<CheckpointFiles> detect_checkpoint(const std::string& dir);

Result<ModelConfig> load_model_config(const std::string& dir);

Result<std::unique_ptr<Model>> load_model(const std::string& dir, std::unique_ptr<Backend> backend,
                                          const LoadOptions& options = {});

}  // namespace mistral
