#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "core/check.h"
#include "core/half.h"
#include "core/quant.h"
#include "core/thread_pool.h"

namespace mistral {

Tensor Tensor::allocate(DType dtype, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  const size_t bytes = std::max<uint64_t>(t.num_bytes(), 1);
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  MISTRAL_CHECK(p != nullptr) << "out of memory allocating " << rounded << " bytes";
  std::memset(p, 0, rounded);
  t.data = p;
  t.owner = std::shared_ptr<const void>(p, [](const void* q) { std::free(const_cast<void*>(q)); });
  return t;
}

uint64_t Tensor::scale_bytes() const {
  if (quant == QuantType::kNone) return 0;
  return num_elements() / kQuantGroupSize * 2;  // one F16 per group
}

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

float load_float(const void* data, DType dtype, size_t i) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(data)[i];
    case DType::kBF16:
      return bf16_to_float(static_cast<const BF16*>(data)[i]);
    case DType::kF16:
      return f16_to_float(static_cast<const F16*>(data)[i]);
    default:
      MISTRAL_CHECK(false) << "not a float dtype: " << dtype_name(dtype);
  }
  return 0;
}

void store_float(void* data, DType dtype, size_t i, float v) {
  switch (dtype) {
    case DType::kF32:
      static_cast<float*>(data)[i] = v;
      break;
    case DType::kBF16:
      static_cast<BF16*>(data)[i] = float_to_bf16(v);
      break;
    case DType::kF16:
      static_cast<F16*>(data)[i] = float_to_f16(v);
      break;
    default:
      MISTRAL_CHECK(false) << "not a float dtype: " << dtype_name(dtype);
  }
}

Tensor convert_tensor(const Tensor& src, DType to) {
  if (src.quantized()) return convert_tensor(dequantize_matrix(src), to);
  if (src.dtype == to) return src;
  Tensor out = Tensor::allocate(to, src.shape);
  const size_t n = src.num_elements();
  void* dst = out.mutable_data();
  ThreadPool::global().parallel_for(n, 1 << 16, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i)
      store_float(dst, to, i, load_float(src.data, src.dtype, i));
  });
  return out;
}

}  // namespace mistral
