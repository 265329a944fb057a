#include "core/dtype.h"

#include <array>
#include <utility>

namespace mistral {
namespace {

constexpr std::array<std::pair<DType, std::string_view>, 10> kNames = {{
    {DType::kF32, "F32"},
    {DType::kF16, "F16"},
    {DType::kBF16, "BF16"},
    {DType::kF64, "F64"},
    {DType::kI64, "I64"},
    {DType::kI32, "I32"},
    {DType::kI16, "I16"},
    {DType::kI8, "I8"},
    {DType::kU8, "U8"},
    {DType::kBool, "BOOL"},
}};

}  // namespace

std::string_view dtype_name(DType t) {
  for (const auto& [dtype, name] : kNames) {
    if (dtype == t) return name;
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& [dtype, spelling] : kNames) {
    if (spelling == name) return dtype;
  }
  return std::nullopt;
}

std::optional<DType> parse_float_dtype(std::string_view name) {
  if (name == "f32" || name == "float32" || name == "F32" || name == "float") return DType::kF32;
  if (name == "bf16" || name == "bfloat16" || name == "BF16") return DType::kBF16;
  if (name == "f16" || name == "float16" || name == "F16" || name == "half") return DType::kF16;
  return std::nullopt;
}

}  // namespace mistral
