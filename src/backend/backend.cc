// The default implementations of Backend's fused ops (backend.h): the separate ops in turn.
#include "backend/backend.h"

#include "core/check.h"

namespace mistral {

void Backend::fused_matmul(const void* x, int64_t m, const Tensor& w, void* y,
                           const MatmulFusion& fusion) {
  MISTRAL_CHECK(!(fusion.swiglu && fusion.residual))
      << "fused_matmul: swiglu and residual do not combine";
  const int64_t n = w.shape.at(0), k = w.shape.at(1);
  const size_t act = dtype_size(activation_dtype());
  auto* scratch = static_cast<uint8_t*>(fusion.scratch);
  const void* input = x;
  if (fusion.norm != nullptr) {
    MISTRAL_CHECK(scratch != nullptr) << "fused_matmul: a norm needs scratch";
    rmsnorm(x, m, *fusion.norm, fusion.eps, scratch);
    input = scratch;
  }
  if (!fusion.swiglu && !fusion.residual) return matmul(input, m, w, y);
  MISTRAL_CHECK(scratch != nullptr) << "fused_matmul: swiglu and residual need scratch";
  uint8_t* product = scratch + m * k * act;
  matmul(input, m, w, product);
  if (fusion.residual) return add(y, product, m * n);
  MISTRAL_CHECK(n % 2 == 0) << "fused_matmul: swiglu needs an even number of rows, got " << n;
  const int64_t half = n / 2;
  for (int64_t r = 0; r < m; ++r) {
    silu_mul(product + r * n * act, product + (r * n + half) * act,
             static_cast<uint8_t*>(y) + r * half * act, half);
  }
}

}  // namespace mistral
