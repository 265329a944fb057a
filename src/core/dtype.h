// Element types of tensors on disk and in memory, with the safetensors spelling of each.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace mistral {

enum class DType : uint8_t { kF32, kF16, kBF16, kF64, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element.
constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF64:
    case DType::kI64:
      return 8;
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
    case DType::kI16:
      return 2;
    case DType::kI8:
    case DType::kU8:
    case DType::kBool:
      return 1;
  }
  return 0;
}

// The safetensors header spelling: "F32", "BF16", ...
std::string_view dtype_name(DType t);
// Parses a safetensors dtype string; nullopt for anything unknown.
std::optional<DType> parse_dtype(std::string_view name);
// Parses the user-facing spelling used on the command line and in config.json:
// "f32"/"float32", "bf16"/"bfloat16", "f16"/"float16" (also accepts the safetensors spelling).
std::optional<DType> parse_float_dtype(std::string_view name);

}  // namespace mistral
